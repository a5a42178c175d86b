"""The forgetting probe: what fine-tuning cost the model's general abilities, as one number.

The probe ships with oikyo (``probe/``, written by ``python -m oikyo.evaluate.probe.build``): 40
held-out paragraphs of general English, 60 general instructions with checkable answers
(arithmetic, capitals, unit conversions, simple facts, spelling and ordering) and 22 open-ended
requests (advice, explanations, stories, how-tos, a complaint, greetings). Both the base model and
the fine-tuned model run it with the same prompts and greedy decoding:

- ``probe_accuracy``: share of instructions answered correctly (an accepted answer appears as whole
  words in the normalized reply),
- ``probe_perplexity``: perplexity of the paragraphs (every token, teacher-forced),
- ``probe_degenerate``: share of the open-ended answers that are degenerate (loops, emoji or symbol
  soup, empty; :mod:`oikyo.evaluate.degeneration` says which rule fired). Each request is asked
  twice, with no system prompt and with a generic one (``probe.build.OPEN_SYSTEMS``), up to
  :data:`OPEN_MAX_NEW_TOKENS` new tokens. Short answers and text perplexity miss a model that
  answers "My order never arrived!" with a loop of emoji once its training system prompt is gone;
  this measure sees it.

**Forgetting** is the largest of three losses::

    accuracy_drop       = (acc_base - acc_tuned) / acc_base          (acc_base > 0; else -acc_tuned)
    perplexity_increase = ppl_tuned / ppl_base - 1
    degenerate_increase = degenerate_tuned - degenerate_base          (shares of open-ended answers)
    forgetting          = max(accuracy_drop, perplexity_increase, degenerate_increase)

So ``forgetting = 0.08`` means "8% worse on the probe, by the worst of the three measures" (for
degeneration: 8 more degenerate answers in 100); a negative value means the probe improved. Results
stored before probe version 2 have no degeneration and keep the larger of the first two. It is
flagged when above the threshold (default 0.10, ``--forgetting-threshold``), and gates can test it
(``--gate "forgetting<=0.05"``, or ``degenerate_increase`` alone).

With 60 instructions, one answer is 1.7 points of accuracy, so a small drop can be chance. The
result therefore also carries the paired-bootstrap 95% interval of the change in probe accuracy
(``probe_accuracy_delta_ci``, same items for both models, :mod:`oikyo.evaluate.bootstrap`): a flag
whose interval includes 0 is shown as within the probe's noise. The flag itself stays on the point
value, so a gate never passes a model because the probe is small.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from oikyo.evaluate import degeneration
from oikyo.evaluate.bootstrap import paired_bootstrap
from oikyo.evaluate.metrics import normalize_label
from oikyo.evaluate.probe.build import INSTRUCTIONS_FILE, OPEN_FILE, OPEN_SYSTEMS, PROBE_VERSION, TEXT_FILE

DEFAULT_THRESHOLD = 0.10
MAX_NEW_TOKENS = 24  # probe answers are a word or a number; a little room for "The answer is ..."
# The first 64 tokens (2-3 sentences) of an open answer: where a collapsed model's loop shows at once.
# Measured on the base model, greedy: half its answers run past 320 tokens and 22 of 48 loop by then
# (24 requests x 2 system prompts; a 135M model loops when it rambles); at 64 tokens the shipped ones do not.
OPEN_MAX_NEW_TOKENS = 64
EXAMPLES = 3  # degenerate answers kept per model in the summary, for the reports to show


def _read(path: Path) -> tuple[dict, ...]:
    return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@lru_cache(maxsize=1)
def load_probe() -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """(paragraphs, instructions) of the shipped probe."""
    return _read(TEXT_FILE), _read(INSTRUCTIONS_FILE)


@lru_cache(maxsize=1)
def open_requests() -> tuple[dict, ...]:
    """The open-ended requests of the shipped probe, each once per system prompt of ``OPEN_SYSTEMS``."""
    return tuple({**row, "system": system} for system in OPEN_SYSTEMS for row in _read(OPEN_FILE))


def probe_size() -> int:
    """Work items of one probe run (instructions and open requests generated + paragraphs scored), for progress."""
    texts, items = load_probe()
    return len(texts) + len(items) + len(open_requests())


def answer_correct(reply: str, answers: list[str]) -> bool:
    """Whether an accepted answer appears as whole words in the normalized reply."""
    text = f" {normalize_label(reply)} "
    return any(f" {normalize_label(answer)} " in text for answer in answers if normalize_label(answer))


def run_probe(backend, adapter: str | None, *, batch_size: int = 16, progress: Callable[[int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict:
    """Run the probe on one model (``adapter`` on ``backend``'s base model, or the model itself)."""
    from oikyo.evaluate.backend import GenerationSettings
    from oikyo.models.chat_template import encode_prompt, encode_text

    texts, items = load_probe()
    tokenizer = backend.tokenizer
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": item["prompt"]}]) for item in items]
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size)
    replies = backend.generate(prompts, adapter=adapter, settings=settings, progress=progress, should_stop=should_stop)
    correct = [answer_correct(reply, item["answers"]) for reply, item in zip(replies, items)]
    encoded = [encode_text(tokenizer, t["text"]) for t in texts]
    nll, tokens = backend.nll(encoded, adapter=adapter, progress=progress, should_stop=should_stop)
    open_items = _run_open(backend, adapter, batch_size=batch_size, progress=progress, should_stop=should_stop)
    return {
        "version": PROBE_VERSION,
        "accuracy": sum(correct) / len(correct),
        "perplexity": math.exp(sum(nll) / max(sum(tokens), 1)),
        "degenerate": sum(i["degenerate"] for i in open_items) / len(open_items),
        "truncated": sum(i["finish"] == "length" for i in open_items) / len(open_items),
        "correct_by_category": _by_category(items, correct),
        "items": [{"id": item["id"], "reply": reply, "correct": ok} for item, reply, ok in zip(items, replies, correct)],
        "open_items": open_items,
    }


def _run_open(backend, adapter: str | None, *, batch_size: int, progress, should_stop) -> list[dict]:
    """Generate every open-ended answer and judge it; one dict per (request, system prompt)."""
    from oikyo.evaluate.backend import GenerationSettings
    from oikyo.models.chat_template import encode_prompt

    requests = open_requests()
    prompts = [encode_prompt(backend.tokenizer, ([{"role": "system", "content": r["system"]}] if r["system"] else [])
                             + [{"role": "user", "content": r["prompt"]}]) for r in requests]
    settings = GenerationSettings(max_new_tokens=OPEN_MAX_NEW_TOKENS, batch_size=batch_size)
    results = backend.generate_results(prompts, adapter=adapter, settings=settings, progress=progress,
                                       should_stop=should_stop)
    out = []
    for request, result in zip(requests, results):
        verdict = degeneration.judge(result.text, truncated=result.finish_reason == "length")
        out.append({"id": request["id"], "system": request["system"], "prompt": request["prompt"],
                    "reply": result.text, "finish": result.finish_reason, "tokens": result.completion_tokens,
                    **verdict.to_dict()})
    return out


def _by_category(items, correct) -> dict[str, str]:
    totals: dict[str, list[int]] = {}
    for item, ok in zip(items, correct):
        counts = totals.setdefault(item["category"], [0, 0])
        counts[0] += int(ok)
        counts[1] += 1
    return {category: f"{right}/{total}" for category, (right, total) in totals.items()}


def accuracy_delta_ci(base: dict, tuned: dict) -> dict | None:
    """Paired-bootstrap 95% interval of the probe accuracy change (tuned - base), or None when the two
    results do not hold the same items (results stored before items were kept, or another probe)."""
    items_base, items_tuned = base.get("items") or [], tuned.get("items") or []
    if not items_base or [i["id"] for i in items_base] != [i["id"] for i in items_tuned]:
        return None
    right_tuned = np.array([[float(i["correct"])] for i in items_tuned])
    right_base = np.array([[float(i["correct"])] for i in items_base])
    result = paired_bootstrap(right_tuned, right_base, lambda sums, n: sums[..., 0] / n, seed=0)
    return {"delta": result.delta, "low": result.low, "high": result.high, "significant": result.significant}


def degenerate_examples(result: dict, limit: int = EXAMPLES, chars: int = 240) -> list[dict]:
    """The first ``limit`` degenerate open-ended answers of a probe result (replies cut to ``chars``)."""
    found = [i for i in result.get("open_items") or [] if i["degenerate"]]
    return [{"id": i["id"], "system": i["system"], "prompt": i["prompt"], "rule": i["rule"], "detail": i["detail"],
             "reply": i["reply"][:chars] + ("..." if len(i["reply"]) > chars else "")} for i in found[:limit]]


def forgetting(base: dict, tuned: dict, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Compare two probe results (see the module docstring for the definition)."""
    acc_base, acc_tuned = base["accuracy"], tuned["accuracy"]
    accuracy_drop = (acc_base - acc_tuned) / acc_base if acc_base > 0 else -acc_tuned
    ratio = tuned["perplexity"] / base["perplexity"]
    deg_base, deg_tuned = base.get("degenerate"), tuned.get("degenerate")
    degenerate_increase = deg_tuned - deg_base if deg_base is not None and deg_tuned is not None else None
    value = max(accuracy_drop, ratio - 1, *([degenerate_increase] if degenerate_increase is not None else []))
    return {
        "probe_version": PROBE_VERSION,
        "forgetting": value,
        "threshold": threshold,
        "flagged": value > threshold,
        "accuracy_drop": accuracy_drop,
        "perplexity_increase": ratio - 1,
        "perplexity_ratio": ratio,
        "probe_accuracy_delta": acc_tuned - acc_base,
        "probe_accuracy_delta_ci": accuracy_delta_ci(base, tuned),
        "degenerate_increase": degenerate_increase,
        "base": _side(base), "model": _side(tuned),
    }


def _side(result: dict) -> dict:
    return {"accuracy": result["accuracy"], "perplexity": result["perplexity"], "degenerate": result.get("degenerate"),
            "truncated": result.get("truncated"), "correct_by_category": result.get("correct_by_category"),
            "degenerate_examples": degenerate_examples(result)}


def describe_degeneration(summary: dict) -> str:
    """"degenerate answers 0.000 -> 0.542 (+0.542)", or "" for results stored before the probe had them."""
    base, model = summary["base"].get("degenerate"), summary["model"].get("degenerate")
    if base is None or model is None:
        return ""
    return f"degenerate answers {base:.3f} -> {model:.3f} ({model - base:+.3f})"


def example_lines(summary: dict, role: str = "model") -> list[str]:
    """One line per kept degenerate answer of ``role``: id, system prompt, the rule and why, the reply."""
    lines = []
    for ex in (summary.get(role) or {}).get("degenerate_examples") or []:
        system = "no system prompt" if ex["system"] is None else f"system {ex['system']!r}"
        lines.append(f"  {ex['id']} ({system}) {ex['rule']}: {ex['detail']}")
        lines.append(f"    {ex['prompt']!r} -> {ex['reply']!r}")
    return lines


def describe_change(summary: dict) -> str:
    """The probe accuracy change with its interval, e.g. "-0.067, 95% CI [-0.150, +0.033]: within the
    probe's noise" (just the change for results stored without items)."""
    ci = summary.get("probe_accuracy_delta_ci")
    text = f"{summary['probe_accuracy_delta']:+.3f}"
    if ci:
        verdict = "beyond the probe's noise" if ci["significant"] else "within the probe's noise"
        text += f", 95% CI [{ci['low']:+.3f}, {ci['high']:+.3f}]: {verdict}"
    return text
