"""Benchmark: the evaluation runner's generation path against Hugging Face ``generate``, same run.

    python bench/bench_eval.py                   # bundled SmolLM2-135M-Instruct, 8 prompts x 64 new tokens
    python bench/bench_eval.py --repeats 5 --prompts 16

Three peers generate greedy answers to the same 8 prompts (support-ticket questions from the bundled
sample, encoded with oikyo's chat template, exactly as an evaluation encodes them), each exactly 64
new tokens (end-of-sequence ignored everywhere, so every peer does the same work):

- ``eval path``: :class:`oikyo.evaluate.backend.ModelBackend.generate`, what ``oikyo eval`` runs: the
  shared engine (:mod:`oikyo.serve.engine.core`): slot KV cache, continuous batching, logits only at the
  positions that need them.
- ``HF one-by-one``: ``model.generate(do_sample=False)`` on one prompt at a time (a plain eval loop).
- ``HF batched``: one ``model.generate`` call over all prompts, left-padded (the usual batched eval).

All float32 on the CPU, the same threads, one process; every peer is warmed up once, then timed
``--repeats`` times, alternating peers, and its best time is reported (the machine is shared, so the
minimum is the least disturbed measurement). The greedy answers of the engine and of HF's
one-by-one loop, both stopping at the end of the turn, are compared token for token (with the
end-of-sequence token suppressed, HF picks another token where the engine's would be eos, so the
forced-length outputs are not comparable after that point).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sample_prompts(tokenizer, n: int) -> list[list[int]]:
    """The first ``n`` support tickets' prompts (system + user message), encoded as the evaluation does."""
    from oikyo.data.sample import generate_support_tickets
    from oikyo.evaluate.examples import to_example
    from oikyo.models.chat_template import encode_prompt

    examples = [to_example(i, row) for i, row in enumerate(generate_support_tickets(n, seed=1))]
    return [encode_prompt(tokenizer, e.prompt) for e in examples]


def engine_tokens(backend, prompts, new_tokens: int):
    """Greedy token ids from the engine the eval path uses, stopping at end of turn (for the agreement check)."""
    from oikyo.serve.engine.requests import GenerationRequest

    results = backend.engine.generate([GenerationRequest(list(p), max_new_tokens=new_tokens) for p in prompts])
    return [r.token_ids for r in results]


def hf_one_by_one(model, prompts, new_tokens: int, *, exact: bool = True):
    """``exact``: exactly ``new_tokens`` tokens (eos suppressed); else stop at eos like the engine."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in prompts:
            tensor = torch.tensor([ids])
            generated = model.generate(tensor, attention_mask=torch.ones_like(tensor), do_sample=False,
                                       max_new_tokens=new_tokens, min_new_tokens=new_tokens if exact else 0)
            out.append(generated[0, len(ids):].tolist())
    return out


def hf_batched(model, pad_id: int, prompts, new_tokens: int):
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):  # left padding, as generate() needs for decoder-only models
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    with torch.inference_mode():
        generated = model.generate(input_ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, pad_token_id=pad_id)
    return [row[width:].tolist() for row in generated]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=None, help="default: the bundled model (converted once)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()

    import torch

    from oikyo.evaluate.backend import GenerationSettings, ModelBackend
    from oikyo.models.loading import load_model, load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_dir is None:
        from oikyo.models.bundled import ensure_bundled_model

        args.model_dir = str(ensure_bundled_model(log=print))
    tokenizer = load_tokenizer(args.model_dir)
    prompts = sample_prompts(tokenizer, args.prompts)
    backend = ModelBackend(args.model_dir, batch_size=args.prompts)
    model = load_model(args.model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    settings = GenerationSettings(max_new_tokens=args.new_tokens, ignore_eos=True, batch_size=args.prompts)
    peers = {
        "eval path (engine)": lambda: backend.generate(prompts, adapter=None, settings=settings),
        "HF one-by-one": lambda: hf_one_by_one(model, prompts, args.new_tokens),
        "HF batched": lambda: hf_batched(model, pad, prompts, args.new_tokens),
    }
    print(f"model {args.model_dir}; {len(prompts)} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
          f"{args.new_tokens} new tokens each, torch threads {torch.get_num_threads()}", flush=True)
    ours_tokens = engine_tokens(backend, prompts, args.new_tokens)
    theirs_tokens = hf_one_by_one(model, prompts, args.new_tokens, exact=False)
    agree = sum(a == b for a, b in zip(ours_tokens, theirs_tokens))
    best = {name: float("inf") for name in peers}
    for name, fn in peers.items():  # warm-up
        seconds, _ = timed(fn)
        print(f"  warm-up: {name} {seconds:.2f} s", flush=True)
    for repeat in range(args.repeats):
        for name, fn in peers.items():
            seconds, _ = timed(fn)
            best[name] = min(best[name], seconds)
            print(f"  repeat {repeat + 1}: {name} {seconds:.2f} s", flush=True)
    tokens = len(prompts) * args.new_tokens
    for name, seconds in best.items():
        print(f"{name:>20}: {seconds:7.2f} s  {tokens / seconds:7.1f} new tokens/s")
    one, batched, ours = best["HF one-by-one"], best["HF batched"], best["eval path (engine)"]
    print(f"eval path vs HF one-by-one: {one / ours:.2f}x   (goal >= 5x)")
    print(f"eval path vs HF batched:    {batched / ours:.2f}x   (goal >= 1.2x)")
    print(f"greedy answers (stopping at end of turn) identical to HF one-by-one: {agree}/{len(prompts)}")
    sys.exit(0)


if __name__ == "__main__":
    main()
