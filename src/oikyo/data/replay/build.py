"""Build oikyo's shipped replay set: ``python -m oikyo.data.replay.build [--model-dir DIR] [--out FILE]``.

The shipped replay set (``general.jsonl`` beside this module) is the classic *self-distillation*
replay: general prompts written by oikyo's authors (:mod:`oikyo.data.replay.prompts`) answered by
the bundled base model itself (SmolLM2-135M-Instruct, Apache-2.0), greedily, through oikyo's own
generation engine (:class:`oikyo.serve.engine.core.GenerationEngine`, the engine that serves and
evaluates models). Training on a share of these answers pulls a fine-tuned model back toward its
own original behaviour on general requests. See NOTICE for the licence of the result.

Steps:

1. every prompt (with its system prompt, if any) becomes token ids through the one chat template;
2. the engine answers all of them in batches (greedy, at most :data:`MAX_NEW_TOKENS` tokens);
3. an answer cut at the token limit is trimmed back to its last complete sentence
   (:func:`trim_truncated`), so no row teaches the model to stop mid-sentence;
4. degenerate answers are dropped (:func:`degenerate_reason`: empty, too short, repetition loops,
   not language), and the count of each reason is printed and recorded;
5. the JSONL is written: a first line ``{"provenance": {...}}`` saying how it was made, then one
   OpenAI-style conversation per line, ``{"id", "messages": [system?, user, assistant]}``.

Rerun it after changing the prompts or the model, and bump :data:`oikyo.data.replay.REPLAY_VERSION`.
It is slow on a small CPU: the shipped build answered 292 prompts in 4162 s (about 70 minutes) on 2
CPU cores shared with other work (load ~8), and kept 216 rows. Pass ``--raw FILE`` to cache the raw
answers by prompt, so re-filtering or editing a few prompts regenerates only what changed.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

from oikyo.data.replay import REPLAY_VERSION, SHIPPED_FILE
from oikyo.data.replay.prompts import prompts

MAX_NEW_TOKENS = 160  # a short answer fits; longer ones are trimmed to their last full sentence (2 shared cores)
BATCH_SIZE = 48  # sequences decoded together by the engine (continuous batching)
MIN_WORDS = 3  # shorter answers teach little (a greeting's reply still has more)
# Where a cut answer may end: a sentence's end (not a list number's "1.") or a line's.
_CUT = re.compile(r"(?<![0-9])[.!?][\"')\]*]*(?=\s|$)|\n")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def degenerate_reason(answer: str) -> str | None:
    """Why ``answer`` is unfit for replay ("empty", "too_short", "repeated_line", "repeated_sentence",
    "repeated_ngram", "not_language"), or None when it is a usable answer. Pure function: no model needed."""
    text = answer.strip()
    if not text:
        return "empty"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < 0.6 * len(visible) or max(len(w) for w in text.split()) > 40:
        return "not_language"  # mostly symbols/emoji, or a "word" no language has
    words = _words(text)
    if len(words) < MIN_WORDS and len(text) < 12:  # (a CJK sentence is one \w+ run, so the length too)
        return "too_short"
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 10]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return "repeated_line"  # the same line three times or more: a loop
    sentences = [" ".join(_words(s)) for s in re.split(r"(?<=[.!?])\s+", text)]
    sentences = [s for s in sentences if s.count(" ") >= 5]
    if sentences and Counter(sentences).most_common(1)[0][1] >= 2:
        return "repeated_sentence"  # a whole sentence said twice: the start of a loop
    if len(words) >= 12:
        grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
        top = grams.most_common(1)[0][1]
        if top >= 4 and top * 4 > 0.3 * len(words):
            return "repeated_ngram"  # one 4-word phrase covers a third of the answer
    return None


def trim_truncated(answer: str) -> str:
    """``answer`` cut back to its last complete sentence (for answers stopped at the token limit);
    an empty string when no sentence was completed."""
    text = answer.rstrip()
    ends = [m.end() for m in _CUT.finditer(text)]
    return text[:ends[-1]].rstrip() if ends else ""


def _key(item: dict) -> str:
    """The raw-answer cache key of a prompt: its system prompt and text (an edited prompt is a new key)."""
    return f"{item['system'] or ''}\n---\n{item['prompt']}"


def _messages(item: dict) -> list[dict]:
    system = [{"role": "system", "content": item["system"]}] if item["system"] else []
    return system + [{"role": "user", "content": item["prompt"]}]


def generate(model_dir: Path, items: list[dict], *, max_new_tokens: int = MAX_NEW_TOKENS,
             batch_size: int = BATCH_SIZE, log=print) -> list[tuple[str, str]]:
    """(answer text, finish_reason) for each item, greedy, through the serving engine."""
    from oikyo.models.chat_template import encode_prompt
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    engine = GenerationEngine(model_dir, max_batch_size=batch_size, device="auto")
    out: list[tuple[str, str]] = []
    for start in range(0, len(items), batch_size * 2):  # a few batches at a time, to print progress
        chunk = items[start:start + batch_size * 2]
        requests = [GenerationRequest(prompt_ids=encode_prompt(engine.tokenizer, _messages(item)),
                                      max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, seed=0)
                    for item in chunk]
        out += [(result.text, result.finish_reason) for result in engine.generate(requests)]
        log(f"  answered {len(out)}/{len(items)}")
    return out


def assemble(items: list[dict], answers: list[tuple[str, str]]) -> tuple[list[dict], Counter]:
    """The kept conversation rows and the count of dropped answers by reason."""
    rows, dropped = [], Counter()
    for item, (text, finish) in zip(items, answers):
        answer = trim_truncated(text) if finish == "length" else text.strip()
        reason = degenerate_reason(answer)
        if reason:
            dropped["truncated_" + reason if finish == "length" else reason] += 1
            continue
        messages = _messages(item) + [{"role": "assistant", "content": answer}]
        rows.append({"id": item["id"], "messages": messages})
    return rows, dropped


def provenance(model_name: str, kept: int, dropped: Counter, max_new_tokens: int) -> dict:
    return {
        "what": "oikyo's shipped general replay set (data.mix): general prompts answered by the base model",
        "replay_version": REPLAY_VERSION,
        "built_by": "python -m oikyo.data.replay.build",
        "prompts": "written by oikyo's authors (oikyo/data/replay/prompts.py), Apache-2.0 like oikyo",
        "answers": f"generated by {model_name} (Apache-2.0), greedy decoding through oikyo.serve.engine, "
                   f"at most {max_new_tokens} new tokens, trimmed to the last full sentence when cut",
        "licence": "Apache-2.0; see NOTICE in this folder",
        "rows": kept,
        "dropped": dict(sorted(dropped.items())),
    }


def write(path: Path, header: dict, rows: list[dict]) -> None:
    lines = [json.dumps({"provenance": header}, ensure_ascii=False, sort_keys=True)]
    lines += [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oikyo.data.replay.build", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="Hugging Face model folder (default: the bundled model, "
                        "converted into the workspace once)")
    parser.add_argument("--out", type=Path, default=SHIPPED_FILE, help="where to write the JSONL "
                        f"(default: {SHIPPED_FILE.name} beside this module)")
    parser.add_argument("--limit", type=int, help="answer only the first N prompts (a quick trial)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--raw", type=Path, help="a JSON cache of raw answers by prompt: answers found there "
                        "are reused (to re-apply the filters, or after editing a few prompts), new ones are added")
    args = parser.parse_args(argv)

    items = prompts()[: args.limit]
    cache = json.loads(args.raw.read_text()) if args.raw is not None and args.raw.is_file() else {}
    todo = [item for item in items if _key(item) not in cache]
    started = time.perf_counter()
    if todo:
        if args.model_dir is None:
            from oikyo.models import bundled

            args.model_dir = bundled.ensure_bundled_model(log=print)
        print(f"answering {len(todo)} prompts ({len(items) - len(todo)} cached) with {args.model_dir} "
              f"(greedy, batch {BATCH_SIZE})")
        for item, answer in zip(todo, generate(args.model_dir, todo, max_new_tokens=args.max_new_tokens)):
            cache[_key(item)] = list(answer)
        if args.raw is not None:
            args.raw.write_text(json.dumps(cache, ensure_ascii=False))
    seconds = time.perf_counter() - started
    answers = [tuple(cache[_key(item)]) for item in items]
    rows, dropped = assemble(items, answers)
    write(args.out, provenance("SmolLM2-135M-Instruct", len(rows), dropped, args.max_new_tokens), rows)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {len(rows)} rows, {size / 1024:.0f} KiB; dropped {dict(dropped) or 'none'}; "
          f"generation took {seconds:.0f} s for {len(todo)} prompts")


if __name__ == "__main__":
    main()
