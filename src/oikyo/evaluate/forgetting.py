"""The forgetting probe: what fine-tuning cost the model's general abilities, as one number.

The probe ships with oikyo (``probe/``, written by ``python -m oikyo.evaluate.probe.build``): 40
held-out paragraphs of general English and 60 general instructions with checkable answers
(arithmetic, capitals, unit conversions, simple facts, spelling and ordering). Both the base model
and the fine-tuned model run it with the same prompts and greedy decoding:

- ``probe_accuracy``: share of instructions answered correctly (an accepted answer appears as whole
  words in the normalized reply),
- ``probe_perplexity``: perplexity of the paragraphs (every token, teacher-forced).

**Forgetting** is the larger of the two relative losses::

    accuracy_drop       = (acc_base - acc_tuned) / acc_base          (acc_base > 0; else -acc_tuned)
    perplexity_increase = ppl_tuned / ppl_base - 1
    forgetting          = max(accuracy_drop, perplexity_increase)

So ``forgetting = 0.08`` means "8% worse on the probe, by the worse of the two measures"; a negative
value means the probe improved. It is flagged when above the threshold (default 0.10,
``--forgetting-threshold``), and gates can test it (``--gate "forgetting<=0.05"``).

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

from oikyo.evaluate.bootstrap import paired_bootstrap
from oikyo.evaluate.metrics import normalize_label
from oikyo.evaluate.probe.build import INSTRUCTIONS_FILE, PROBE_VERSION, TEXT_FILE

DEFAULT_THRESHOLD = 0.10
MAX_NEW_TOKENS = 24  # probe answers are a word or a number; a little room for "The answer is ..."


@lru_cache(maxsize=1)
def load_probe() -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """(paragraphs, instructions) of the shipped probe."""

    def read(path: Path) -> tuple[dict, ...]:
        return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())

    return read(TEXT_FILE), read(INSTRUCTIONS_FILE)


def probe_size() -> int:
    """Work items of one probe run (instructions generated + paragraphs scored), for progress bars."""
    texts, items = load_probe()
    return len(texts) + len(items)


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
    return {
        "version": PROBE_VERSION,
        "accuracy": sum(correct) / len(correct),
        "perplexity": math.exp(sum(nll) / max(sum(tokens), 1)),
        "correct_by_category": _by_category(items, correct),
        "items": [{"id": item["id"], "reply": reply, "correct": ok} for item, reply, ok in zip(items, replies, correct)],
    }


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


def forgetting(base: dict, tuned: dict, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Compare two probe results (see the module docstring for the definition)."""
    acc_base, acc_tuned = base["accuracy"], tuned["accuracy"]
    accuracy_drop = (acc_base - acc_tuned) / acc_base if acc_base > 0 else -acc_tuned
    ratio = tuned["perplexity"] / base["perplexity"]
    value = max(accuracy_drop, ratio - 1)
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
        "base": {"accuracy": acc_base, "perplexity": base["perplexity"],
                 "correct_by_category": base.get("correct_by_category")},
        "model": {"accuracy": acc_tuned, "perplexity": tuned["perplexity"],
                  "correct_by_category": tuned.get("correct_by_category")},
    }


def describe_change(summary: dict) -> str:
    """The probe accuracy change with its interval, e.g. "-0.067, 95% CI [-0.150, +0.033]: within the
    probe's noise" (just the change for results stored without items)."""
    ci = summary.get("probe_accuracy_delta_ci")
    text = f"{summary['probe_accuracy_delta']:+.3f}"
    if ci:
        verdict = "beyond the probe's noise" if ci["significant"] else "within the probe's noise"
        text += f", 95% CI [{ci['low']:+.3f}, {ci['high']:+.3f}]: {verdict}"
    return text
