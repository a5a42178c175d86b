"""Measurement: does GRPO, started from the SFT model, raise json_field_accuracy on the support-ticket task?

    python bench/grpo_support_tickets.py                      # ~20 minutes on a 2-core CPU
    python bench/grpo_support_tickets.py --grpo-steps 40 --sft-dir DIR   # reuse a merged SFT model

Measured (AMD EPYC, 2 threads; docs/training.md): SFT 0.533, SFT + one epoch of GRPO 0.589, gain
+0.056 with a 95% interval of [+0.000, +0.111] (p = 0.07); 40 steps: -0.039 [-0.094, +0.011];
lr 2e-4, 60 steps: -0.033 [-0.089, +0.017] (the groups collapsed to identical answers).

The quickstart's task and SFT run, then GRPO on top, everything in a temporary workspace:

1. the bundled sample (src/oikyo/data/samples/support_tickets.jsonl) imported and split as the
   quickstart splits it (validation 0.1, test 0.1, seed 0);
2. SFT with the quickstart's LoRA settings (``oikyo.quickstart.TRAIN_OVERRIDES``) on the train
   split, its adapter merged into the base: "the SFT model";
3. GRPO with LoRA from that merged model on the same train split's prompts (rewards json_valid x 0.5
   + json_field_match x 1.0, G = 8, 4 prompts a step; ``--grpo-steps``, ``--lr``);
4. both models answer the 60 test prompts greedily through the evaluation engine
   (:class:`oikyo.evaluate.backend.ModelBackend`: the SFT model, and the same with the GRPO adapter),
   scored with ``json_field_accuracy``; the gain's 95% interval is the paired bootstrap of
   :mod:`oikyo.evaluate.bootstrap` (2000 resamples), as ``oikyo compare`` computes it.

Prints each step's figures and the result; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def train(config, model_dir: Path, run_dir: Path, rows, eval_rows, label: str) -> list[dict]:
    from oikyo.train.runner import run_training

    steps = []

    def on_metrics(step: int, metrics: dict) -> None:
        steps.append({"step": step, **metrics})
        keys = ("loss", "reward", "reward_std", "zero_std_groups", "eval_reward", "completion_length", "generation_s")
        shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
        print(f"  {label} step {step}: {shown}", flush=True)

    run_training(config, run_dir=run_dir, model_dir=model_dir, train_rows=lambda: rows, eval_rows=lambda: eval_rows,
                 on_metrics=on_metrics, should_stop=lambda: False, log=lambda m: print(f"  {label}: {m}", flush=True))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo-steps", type=int, default=120, help="120: one epoch of the 480 train prompts")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", choices=["last", "best"], default="best",
                        help="GRPO weights evaluated: the last step's, or those with the best validation reward")
    parser.add_argument("--model-dir", default=None, help="the converted bundled model (default: converted here)")
    parser.add_argument("--sft-dir", default=None, help="reuse a merged SFT model folder (skips steps 1-2's training)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="oikyo-grpo-task-"))
    os.environ["OIKYO_HOME"] = str(home)

    from oikyo.data import sample, versions
    from oikyo.data.split import split_dataset
    from oikyo.evaluate.backend import GenerationSettings, ModelBackend
    from oikyo.evaluate.bootstrap import paired_bootstrap
    from oikyo.evaluate.examples import to_example
    from oikyo.evaluate.metrics import get as metric
    from oikyo.models.bundled import ensure_bundled_model
    from oikyo.models.chat_template import encode_prompt
    from oikyo.quickstart import TRAIN_OVERRIDES
    from oikyo.train.config import load_config
    from oikyo.train.runner import merge_adapter

    started = time.perf_counter()
    base = Path(args.model_dir) if args.model_dir else ensure_bundled_model(models_dir=home / "models")
    version = versions.import_dataset(sample.sample_path(), name="support-tickets").version
    split, _ = split_dataset(version.id, validation=0.1, test=0.1, seed=0)
    rows = {name: list(versions.iter_rows(split, split=name)) for name in ("train", "validation", "test")}
    print(f"support tickets: {', '.join(f'{k} {len(v)}' for k, v in rows.items())} rows", flush=True)

    result: dict = {"args": vars(args)}
    if args.sft_dir:
        sft_dir = Path(args.sft_dir)
    else:
        print(f"SFT ({', '.join(TRAIN_OVERRIDES)})", flush=True)
        t = time.perf_counter()
        config = load_config(None, list(TRAIN_OVERRIDES))
        sft_run = home / "runs" / "sft"
        train(config, base, sft_run, rows["train"], rows["validation"], "sft")
        sft_dir = merge_adapter(base, sft_run / "output", home / "models" / "sft-merged")
        result["sft_seconds"] = time.perf_counter() - t

    overrides = [
        "method.name=grpo", "grpo.rewards=[{name: json_valid, weight: 0.5}, {name: json_field_match, weight: 1.0}]",
        f"grpo.num_generations={args.group}", f"grpo.max_new_tokens={args.max_new}",
        f"grpo.temperature={args.temperature}", "train.batch_size=4", f"train.max_steps={args.grpo_steps}",
        f"train.lr={args.lr}", "train.scheduler=constant", "train.warmup_steps=0", f"train.seed={args.seed}",
        "train.eval_every=10", "data.max_eval_rows=32", "checkpoint.save_every=null", "checkpoint.keep_best=1",
        "data.max_length=512", f"checkpoint.export={args.export}",
    ]
    print(f"GRPO from the SFT model ({', '.join(overrides)})", flush=True)
    t = time.perf_counter()
    grpo_run = home / "runs" / "grpo"
    steps = train(load_config(None, overrides), sft_dir, grpo_run, rows["train"], rows["validation"], "grpo")
    result["grpo_seconds"] = time.perf_counter() - t
    result["grpo_rewards"] = [s["reward"] for s in steps]
    result["grpo_eval_rewards"] = {s["step"]: s["eval_reward"] for s in steps if "eval_reward" in s}

    print("Test split: greedy answers of the SFT model and of SFT + GRPO", flush=True)
    examples = [e for e in (to_example(i, row) for i, row in enumerate(rows["test"])) if e is not None]
    backend = ModelBackend(sft_dir, batch_size=16)
    backend.add_adapter("grpo", grpo_run / "output")
    prompts = [encode_prompt(backend.tokenizer, e.prompt, e.tools) for e in examples]
    references = [e.reference for e in examples]
    settings = GenerationSettings(max_new_tokens=64)
    answers = {name: backend.generate(prompts, adapter=adapter, settings=settings)
               for name, adapter in (("sft", None), ("grpo", "grpo"))}
    accuracy, valid = metric("json_field_accuracy"), metric("json_valid")
    scored = {name: accuracy.score(texts, references) for name, texts in answers.items()}
    gain = paired_bootstrap(scored["grpo"].stats, scored["sft"].stats, accuracy.aggregate, resamples=2000, seed=0)
    result.update(
        test_rows=len(examples),
        json_field_accuracy={name: s.value for name, s in scored.items()},
        json_valid={name: valid.score(texts, references).value for name, texts in answers.items()},
        gain=gain.to_dict(), total_seconds=time.perf_counter() - started,
        examples=[{"reference": r, "sft": a, "grpo": b} for r, a, b in
                  list(zip(references, answers["sft"], answers["grpo"]))[:5]],
    )
    print(f"json_field_accuracy on {len(examples)} test rows: SFT {scored['sft'].value:.4f}, SFT + GRPO "
          f"{scored['grpo'].value:.4f}; gain {gain.delta:+.4f}, 95% CI [{gain.low:+.4f}, {gain.high:+.4f}] "
          f"(paired bootstrap, p = {gain.p_value:.3f}); json_valid {result['json_valid']}")
    print(f"total {result['total_seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
