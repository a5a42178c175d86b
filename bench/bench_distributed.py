"""Benchmark: one training run in 1 process against 2 processes (train.nproc, torchrun + DDP, gloo), and
DCP checkpoints against the single-process safetensors checkpoint.

    python bench/bench_distributed.py                  # ~2 minutes on an idle 2-core CPU
    python bench/bench_distributed.py --steps 40 --layers 8 --hidden 512

What runs:

- Model: a random Llama built from a config (``--layers``, ``--hidden``, head size 64) with the
  bundled SmolLM2 tokenizer (49k vocabulary), float32, LoRA r=16 on all linear layers, dropout 0.
- Data: synthetic conversations (~70 tokens each), global batch ``--batch`` examples, the same
  seeded order for both peers, ``--steps`` optimizer steps.
- Peers: ``train.nproc=1`` with the machine's physical cores as threads, and ``train.nproc=2``
  (the cores split between the processes: ``num_threads: auto``), launched by ``run_training``
  exactly as the worker does. Both train the same global batches, so their loss curves agree (the
  largest difference is printed) and only the speed differs.
- Reported: steady-state steps/s (wall clock between the arrival of step 3's metrics and the last
  step's, so process start-up and the first steps are left out), the whole call's wall time
  (start-up included), and the ratio 2 processes / 1 process. On a 2-core machine two processes
  cannot beat one process with two threads by much: the figure is there to be honest about the
  overhead (gradient all-reduce over gloo, duplicated evaluation), not to flatter.
- Checkpoints, in one process: saving and loading the trainable weights plus AdamW state with the
  single-process format (safetensors + JSON) and with torch.distributed.checkpoint (no process
  group), best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROWS = [
    {"messages": [
        {"role": "user", "content": f"Describe item number {i} of the inventory in one sentence, please."},
        {"role": "assistant", "content": f"Item {i} is a {['red', 'green', 'blue', 'grey'][i % 4]} "
                                         f"{['box', 'lamp', 'chair', 'kettle', 'book'][i % 5]} kept on shelf {i % 7}."},
    ]}
    for i in range(256)
]


def build_model(root: Path, layers: int, hidden: int) -> Path:
    from oikyo.models import bundled
    from oikyo.models.loading import tiny_model_dir

    tokenizer = bundled.ensure_bundled_tokenizer(models_dir=root / "tokenizer")
    return tiny_model_dir(root / "model", tokenizer, layers=layers, hidden=hidden, head_dim=64)


def train(model_dir: Path, run_dir: Path, nproc: int, args) -> dict:
    from oikyo.train.config import load_config
    from oikyo.train.hardware import detect
    from oikyo.train.runner import run_training

    threads = detect().physical_cores if nproc == 1 else "auto"
    config = load_config(None, [
        f"train.nproc={nproc}", f"train.num_threads={threads}", f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch}", "lora.dropout=0", "train.eval_every=1000", "data.eval_split=null",
        "checkpoint.save_every=null",
    ])
    arrivals: dict[int, float] = {}
    losses: dict[int, float] = {}

    def on_metrics(step: int, metrics: dict) -> None:
        arrivals.setdefault(step, time.perf_counter())
        losses.setdefault(step, metrics["loss"])

    start = time.perf_counter()
    run_training(config, run_dir=run_dir, model_dir=model_dir, train_rows=lambda: ROWS, eval_rows=None,
                 on_metrics=on_metrics, should_stop=lambda: False, log=lambda message: None)
    total = time.perf_counter() - start
    first, last = 3, max(arrivals)
    steady = (last - first) / (arrivals[last] - arrivals[first])
    return {"nproc": nproc, "threads_per_process": threads, "steps_per_s": steady, "wall_s": total, "losses": losses}


def checkpoint_times(model_dir: Path, root: Path, repeats: int) -> dict:
    """Save/load times of one process's trainable state: safetensors + JSON against DCP."""
    import torch
    from transformers import get_scheduler

    from oikyo.train import checkpoints as ckpt
    from oikyo.train import distributed
    from oikyo.train.config import load_config
    from oikyo.train.runner import build_model as build, build_optimizer, lora_kwargs

    config = load_config(None, ["lora.dropout=0"])
    model = build(model_dir, "lora", torch.float32, "cpu", lora_kwargs(config), False)
    optimizer = build_optimizer(model, 1e-4, 0.0, fused=False)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=0, num_training_steps=10)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
    optimizer.step()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def write_weights(folder: Path) -> None:
        model.save_pretrained(folder)

    def load_single(folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        ckpt.load_optimizer(optimizer, folder)

    results = {}
    for name, save, load in (
        ("safetensors", lambda r: ckpt.save_checkpoint(r, 1, write_weights=write_weights, optimizer=optimizer,
                                                         scheduler=scheduler, state={}), load_single),
        ("dcp", lambda r: distributed.save_checkpoint(r, 1, dist=None, model=model, optimizer=optimizer,
                                                        write_weights=write_weights, scheduler=scheduler, state={}),
         lambda folder: distributed.load_checkpoint(folder, model, optimizer)),
    ):
        saves, loads = [], []
        for _ in range(repeats):
            folder_root = root / f"ckpt-{name}"
            shutil.rmtree(folder_root, ignore_errors=True)
            t = time.perf_counter()
            folder = save(folder_root)
            saves.append(time.perf_counter() - t)
            t = time.perf_counter()
            load(folder)
            loads.append(time.perf_counter() - t)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        results[name] = {"save_s": min(saves), "load_s": min(loads), "bytes": size}
    results["trainable_parameters"] = trainable
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import platform

    import torch

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(root, args.layers, args.hidden)
        one = train(model_dir, root / "one", 1, args)
        two = train(model_dir, root / "two", 2, args)
        checkpoints = checkpoint_times(model_dir, root, args.repeats)
    difference = max(abs(one["losses"][s] - two["losses"][s]) for s in one["losses"])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}; model {args.layers} layers x "
          f"{args.hidden}, LoRA r=16, batch {args.batch}, {args.steps} steps; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    for run in (one, two):
        print(f"nproc={run['nproc']} ({run['threads_per_process']} threads/process): "
              f"{run['steps_per_s']:.2f} steps/s steady, {run['wall_s']:.1f} s wall (start-up included)")
    print(f"2 processes / 1 process: {two['steps_per_s'] / one['steps_per_s']:.2f}x steps/s, "
          f"{one['wall_s'] / two['wall_s']:.2f}x wall; largest loss difference {difference:.1e}")
    print(f"checkpoint of {checkpoints['trainable_parameters']:,} trainable parameters + AdamW state, one process:")
    for name in ("safetensors", "dcp"):
        c = checkpoints[name]
        print(f"  {name:12s} save {c['save_s'] * 1000:7.1f} ms  load {c['load_s'] * 1000:7.1f} ms  "
              f"{c['bytes'] / 1e6:6.2f} MB")
    if args.json:
        for run in (one, two):
            run.pop("losses")
        args.json.write_text(json.dumps({"one": one, "two": two, "checkpoints": checkpoints,
                                         "largest_loss_difference": difference, "cpu": cpu}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
