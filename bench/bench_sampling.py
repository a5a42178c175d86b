"""What the OpenAI sampling parameters cost the engine: plain greedy against logprobs, penalties, structured outputs.

Run (about 2 minutes on 2 CPU cores; the bundled model is converted once if needed)::

    HF_HUB_OFFLINE=1 python bench/bench_sampling.py --threads 1        # --repeats 3 --new-tokens 64
    HF_HUB_OFFLINE=1 PYTHONPATH=OLD/src python bench/bench_sampling.py --only plain   # an older checkout

Workload: 8 chat prompts, 64 new tokens each, greedy, one ``GenerationEngine.generate`` of the 8
(batched), float32. Every peer generates exactly 8 x 64 tokens (no stop tokens), so tokens/s
compare equal work. Peers, measured in the same process, interleaved, medians over the repeats:

- ``plain``: no per-row processing (the fast path: one batched argmax).
- ``logprobs_5``: each token's log-probability and its 5 most likely alternatives.
- ``penalties``: presence 0.5 and frequency 0.5 plus a logit bias on 3 tokens.
- ``json_schema``: decoding constrained by llguidance to ``{"answer": string of >= 1000 chars}``,
  so no row can finish before 64 tokens: the mask of a free string at every step.

Goal (issue 21): json_schema >= 0.9x plain. ``--only plain`` measures the plain peer alone, to
compare with a checkout from before the sampling parameters existed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one paragraph.",
    "List three prime numbers.",
    "How do I boil an egg?",
    "What is 12 times 7?",
    "Give me a fun fact about cats.",
    "Translate 'good morning' to Spanish.",
]
LONG_STRING = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 1000}},
               "required": ["answer"], "additionalProperties": False}


def settings(name: str) -> dict:
    """The GenerationRequest fields of one peer."""
    if name == "plain":
        return {}
    if name == "logprobs_5":
        return {"logprobs": 5}
    if name == "penalties":
        return {"presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {13: -5.0, 198: -5.0, 28: 3.0}}
    from oikyo.serve.engine.grammar import json_grammar

    return {"grammar": json_grammar(LONG_STRING)}


def run(engine, prompts, new_tokens: int, name: str) -> float:
    """Tokens per second of one batched generate."""
    from oikyo.serve.engine.requests import GenerationRequest

    extra = settings(name)
    requests = [GenerationRequest(p, max_new_tokens=new_tokens, stop_token_ids=[], **extra) for p in prompts]
    started = time.perf_counter()
    results = engine.generate(requests)
    elapsed = time.perf_counter() - started
    assert all(r.completion_tokens == new_tokens for r in results), [r.completion_tokens for r in results]
    return sum(r.completion_tokens for r in results) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--only", help="comma-separated peers (default: all)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch

    from oikyo.models.bundled import ensure_bundled_model
    from oikyo.models.chat_template import encode_prompt
    from oikyo.serve.engine.core import GenerationEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model or ensure_bundled_model(log=print)
    engine = GenerationEngine(model_dir, max_batch_size=len(QUESTIONS), num_threads=args.threads)
    prompts = [encode_prompt(engine.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]
    peers = args.only.split(",") if args.only else ["plain", "logprobs_5", "penalties", "json_schema"]
    run(engine, prompts, 8, peers[-1])  # warm-up (kernels, the grammar's tokenizer)
    figures: dict[str, list[float]] = {p: [] for p in peers}
    for repeat in range(args.repeats):
        order = peers[repeat % len(peers):] + peers[: repeat % len(peers)]
        for name in order:
            figures[name].append(run(engine, prompts, args.new_tokens, name))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'peer':<12} {'tokens/s':>9} {'x plain':>8} {'paired':>7}   runs")
    for name, value in medians.items():
        ratio = paired = float("nan")
        if "plain" in medians:  # paired: the median of each repeat's own ratio (steadier on a busy machine)
            ratio = value / medians["plain"]
            paired = statistics.median(v / p for v, p in zip(figures[name], figures["plain"]))
        print(f"{name:<12} {value:9.1f} {ratio:8.2f} {paired:7.2f}   {', '.join(f'{v:.1f}' for v in figures[name])}")
    if "plain" in medians and "json_schema" in medians:
        ratio = medians["json_schema"] / medians["plain"]
        print(f"goal json_schema >= 0.9x plain: {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "runs": figures}, indent=2))


if __name__ == "__main__":
    main()
