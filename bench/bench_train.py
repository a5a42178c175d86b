"""Benchmark: oikyo's LoRA SFT loop against TRL's SFTTrainer, same model, data and hyperparameters.

    python bench/bench_train.py                         # ~10-15 minutes on an idle 2-core laptop CPU
    python bench/bench_train.py --tokens 4000 --eval 16  # quicker

What runs (each peer in its own subprocess, one after the other, so peak memory is its own):

- Model: the bundled SmolLM2-135M-Instruct (float32, CPU), LoRA r=16, alpha=32, dropout 0 (oikyo's default) on
  all linear layers, initialised identically (same seed) for both peers.
- Data: alpaca_en_demo.json (LLaMA-Factory's demo, 999 records) as user/assistant conversations,
  tokenized ONCE with oikyo's chat template; both peers get the very same token ids and labels
  (loss on the assistant reply only; TRL receives a pre-tokenized dataset with ``labels``). A
  seeded shuffle picks the validation rows and, disjoint from them, 400 training rows.
- Hyperparameters, both: batch size 8, max length 1024 (TRL's default; every record fits, so
  nothing is truncated), a schedule for 1 epoch of the training rows (50 steps), AdamW lr 2e-4,
  cosine, 1 warmup step, weight decay 0, gradient clipping 1.0, float32 (TRL: bf16=False), the
  machine's physical cores as threads. ``--dtype bfloat16``: both under bf16 autocast instead (oikyo
  ``train.dtype=bfloat16``, its frozen base stored in bf16; TRL ``bf16=True``), on a CPU with native bf16.
  Each peer stops at the first optimizer step at which it has trained on ``--tokens`` non-padding
  tokens (oikyo: ``should_stop``; TRL: a callback on ``num_input_tokens_seen`` counted as
  "non_padding"), so both validation losses stand on the
  same number of training tokens (to within one batch; the exact counts are reported).
- TRL keeps its other defaults: gradient_checkpointing=True, packing=False, padding_free=False
  (random order, padded to the longest in each batch), its fused LM head (log-probs of labelled
  positions only) with entropy and token-accuracy metrics. oikyo uses its defaults: no gradient
  checkpointing, length-grouped batches within the seeded order, head on labelled positions only.

Reported per peer: non-padding tokens/s of the training loop (oikyo: ``recipe.train()``; TRL:
``trainer.train()``, both including their data loading and bookkeeping, excluding model loading),
validation loss after the epoch (same evaluation code for both, so the same number of training
tokens stands behind both numbers), peak RSS, and the share of the machine's float32 matmul peak.
Model FLOPs for LoRA = 4 x parameters x tokens (forward 2PN + backward to the activations 2PN;
frozen weights get no weight gradient, the adapters' own FLOPs are <1% and ignored, attention
scores ignored). The peak is the best of several 2048x2048 float32 matmuls in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "alpaca_en_demo.json"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}


# ----------------------------------------------------------------------------- data


def alpaca_rows(path: Path) -> list[dict]:
    """Alpaca records as canonical conversation rows."""
    rows = []
    for record in json.loads(path.read_text()):
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]})
    return rows


def prepare(args) -> dict:
    """Pick the train/validation rows and tokenize them once (shared by both peers)."""
    from oikyo.models.chat_template import encode_conversation
    from oikyo.models.loading import load_tokenizer

    rows = alpaca_rows(Path(args.dataset))
    random.Random(args.seed).shuffle(rows)
    tokenizer = load_tokenizer(args.model_dir)
    encoded = [encode_conversation(tokenizer, r["messages"]) for r in rows]
    keep = [i for i, e in enumerate(encoded) if len(e) <= args.max_length]
    validation, train = keep[: args.eval], keep[args.eval : args.eval + args.train]
    pack = lambda ids: [{"input_ids": encoded[i].input_ids, "labels": encoded[i].labels} for i in ids]  # noqa: E731
    return {"train_rows": [rows[i] for i in train], "train": pack(train), "validation": pack(validation),
            "dropped_over_max_length": len(rows) - len(keep)}


# ----------------------------------------------------------------------------- shared measurement


def peak_matmul_flops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul FLOP/s over a few repeats (the machine's practical peak)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def validation_loss(model, examples: list[dict], pad_id: int, dtype: str, batch_size: int = 8) -> float:
    """Mean token loss on the labelled (assistant) tokens; the same code for both peers (under bf16 autocast
    when they trained under it)."""
    import torch

    from oikyo.models.chat_template import Encoded
    from oikyo.train import data
    from oikyo.train.runner import target_logprobs

    encoded = [Encoded(e["input_ids"], e["labels"]) for e in examples]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        for items in data.eval_plan([len(e) for e in encoded], batch_size):
            logp, _ = target_logprobs(model, data.collate([encoded[i] for i in items], pad_id))
            total -= logp.sum().item()
            count += logp.numel()
    return total / count


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ----------------------------------------------------------------------------- peers


def run_oikyo(args, prepared: dict) -> dict:
    """oikyo's recipe with its defaults (plus the shared hyperparameters), stopped at the token budget."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import RunContext
    from oikyo.train.sft import SFTRecipe

    config = load_config(None, [
        f"train.batch_size={args.batch_size}", f"data.max_length={args.max_length}", "train.epochs=1",
        "train.lr=2.0e-4", "train.scheduler=cosine", "train.warmup_steps=1", f"train.seed={args.seed}",
        f"train.num_threads={args.threads}", "train.eval_every=null", "checkpoint.save_every=null",
        "data.eval_split=null", f"train.dtype={args.dtype}",
    ])
    rows = prepared["train_rows"]
    steps = []
    budget_reached = lambda: bool(steps) and steps[-1]["tokens"] >= args.tokens  # noqa: E731
    ctx = RunContext(Path(tempfile.mkdtemp(prefix="bench-oikyo-")), Path(args.model_dir), lambda: rows, None,
                     lambda step, m: steps.append(m), budget_reached, lambda message: None)
    recipe = SFTRecipe(config, ctx)
    recipe.setup()
    start, cpu = time.perf_counter(), time.process_time()
    recipe.train()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = peak_rss_mb()
    plan = recipe.plan(0)[: len(steps)]  # the batches it trained on (grad_accum 1: one per step)
    padded = sum(len(b) * max(recipe.lengths[i] for i in b) for b in plan)
    loss = validation_loss(recipe.session.model, prepared["validation"], recipe.pad_id, args.dtype)
    return {"peer": "oikyo", "seconds": elapsed, "cpu_seconds": cpu, "tokens": steps[-1]["tokens"],
            "padding_waste": 1 - steps[-1]["tokens"] / padded, "steps": len(steps),
            "train_loss_last": steps[-1]["loss"], "val_loss": loss, "peak_rss_mb": rss}


def run_trl(args, prepared: dict) -> dict:
    """TRL's SFTTrainer with its defaults (plus the shared hyperparameters, bf16 off), stopped at the budget."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from oikyo.models.loading import load_model, load_tokenizer

    class TokenBudget(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            if state.num_input_tokens_seen >= args.tokens:
                control.should_training_stop = True

    torch.set_num_threads(args.threads)
    set_seed(args.seed)  # the same LoRA initialisation as oikyo's (same seed, same peft call order)
    tokenizer = load_tokenizer(args.model_dir)
    model = get_peft_model(load_model(args.model_dir).train(), LoraConfig(**LORA))
    dataset = Dataset.from_list(prepared["train"])
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=2e-4, lr_scheduler_type="cosine",
        warmup_steps=1, weight_decay=0.0, max_grad_norm=1.0, max_length=args.max_length,
        bf16=args.dtype == "bfloat16", fp16=False,
        seed=args.seed, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[TokenBudget()])
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = peak_rss_mb()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    loss = validation_loss(trainer.model, prepared["validation"], tokenizer.pad_token_id, args.dtype)
    return {"peer": "trl", "seconds": elapsed, "cpu_seconds": cpu, "tokens": trainer.state.num_input_tokens_seen,
            "steps": trainer.state.global_step, "train_loss_last": logs[-1]["loss"] if logs else None,
            "val_loss": loss, "peak_rss_mb": rss, "gradient_checkpointing": config.gradient_checkpointing,
            "padding_free": config.padding_free, "packing": config.packing}


def child(args) -> None:
    prepared = json.loads(Path(args.data).read_text())
    result = (run_oikyo if args.peer == "oikyo" else run_trl)(args, prepared)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def spawn(args, peer: str, data_path: Path) -> dict:
    command = [sys.executable, __file__, "--peer", peer, "--data", str(data_path), "--model-dir", str(args.model_dir),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--threads", str(args.threads), "--seed", str(args.seed), "--tokens", str(args.tokens), "--dtype", args.dtype]
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{peer} failed:\n{process.stderr[-4000:]}")
    line = next(x for x in reversed(process.stdout.splitlines()) if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["process_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400, help="training rows (the schedule spans one epoch)")
    parser.add_argument("--tokens", type=int, default=12_000, help="stop each peer after this many trained tokens")
    parser.add_argument("--eval", type=int, default=48, help="validation rows")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="training precision of both peers: bfloat16 is autocast (oikyo train.dtype=bfloat16, TRL "
                        "bf16=True), only on a CPU with native bf16; the peak stays float32's")
    parser.add_argument("--dataset", default=str(DATASET))
    parser.add_argument("--model-dir", default=None, help="default: the bundled model (converted once)")
    parser.add_argument("--peer", choices=["oikyo", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--peers", default="oikyo,trl", help="which peers to run (the report needs both)")
    args = parser.parse_args()
    if args.threads is None:
        from oikyo.train.hardware import physical_cores

        args.threads = physical_cores()
    if args.peer:
        return child(args)
    if args.model_dir is None:
        from oikyo.models.bundled import ensure_bundled_model

        args.model_dir = str(ensure_bundled_model(log=print))
    prepared = prepare(args)
    data_path = Path(tempfile.mkdtemp(prefix="bench-train-")) / "data.json"
    data_path.write_text(json.dumps(prepared))
    load_before = os.getloadavg()[0]
    peak = peak_matmul_flops(args.threads)
    results = [spawn(args, peer, data_path) for peer in args.peers.split(",")]
    if len(results) < 2:
        print(json.dumps(results, indent=1))
        return
    report(args, prepared, peak, results, load_before)


def report(args, prepared: dict, peak: float, results: list[dict], load_before: float) -> None:
    import platform

    import torch
    import transformers
    import trl

    from oikyo.models.loading import model_info

    params = model_info(args.model_dir)["parameters"]
    ours, theirs = results
    for r in results:
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["model_flops_per_s"] = 4 * params * r["tokens_per_s"]
        r["peak_fraction"] = r["model_flops_per_s"] / peak
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
                   f"transformers {transformers.__version__}, trl {trl.__version__}",
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "train_rows": len(prepared["train"]), "validation_rows": len(prepared["validation"]),
        "batch_size": args.batch_size, "max_length": args.max_length, "parameters": params, "dtype": args.dtype,
        "peak_matmul_gflops": peak / 1e9, "speedup": ours["tokens_per_s"] / theirs["tokens_per_s"],
        "padding_waste_oikyo": ours["padding_waste"], "results": results,
    }
    print(f"\nLoRA SFT, SmolLM2-135M {args.dtype} CPU, ~{args.tokens} tokens from {summary['train_rows']} rows, "
          f"batch {args.batch_size}, max_length {args.max_length}; {summary['machine']}")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'peer':8}{'steps':>6}{'tokens':>8}{'sec':>9}{'tok/s':>9}{'val loss':>10}{'peak MB':>9}{'% peak':>8}")
    for r in results:
        print(f"{r['peer']:8}{r['steps']:>6}{r['tokens']:>8}{r['seconds']:>9.1f}{r['tokens_per_s']:>9.1f}"
              f"{r['val_loss']:>10.4f}{r['peak_rss_mb']:>9.0f}{100 * r['peak_fraction']:>7.1f}%")
    print(f"speedup oikyo / TRL: {summary['speedup']:.2f}x (oikyo padding waste {summary['padding_waste_oikyo']:.1%})")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
