"""Helpers for the multi-process training tests (train.nproc): one run_training call, any process count."""

from __future__ import annotations

from pathlib import Path

# Exactness needs no dropout (its random draws differ between 1 and 2 processes); lr high enough for the
# tiny model's loss to move, batch 3 so that 2 ranks get uneven shares (1 and 2), accumulation so that
# DDP's no_sync path runs.
EXACT = ["train.num_threads=1", "data.max_eval_rows=8", "lora.dropout=0", "train.lr=2e-3", "train.batch_size=3",
         "train.grad_accum=2", "train.warmup_steps=2"]


def train(model_dir: Path, run_dir: Path, nproc: int, overrides: list[str], rows: list[dict],
          stop_after: int | None = None):
    """run_training with ``nproc`` processes, cancelled once ``stop_after`` steps have reported (never
    when None); returns (result, {step: metrics}, log lines)."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    config = load_config(None, [*EXACT, f"train.nproc={nproc}", *overrides])
    metrics: dict[int, dict] = {}
    logs: list[str] = []
    result = run_training(
        config, run_dir=run_dir, model_dir=model_dir, train_rows=lambda: list(rows),
        eval_rows=lambda: list(rows[:6]), on_metrics=lambda step, m: metrics.setdefault(step, dict(m)),
        should_stop=lambda: stop_after is not None and len(metrics) >= stop_after, log=logs.append,
    )
    return result, metrics, logs


def largest_difference(a: dict[int, dict], b: dict[int, dict], steps, key: str = "loss") -> float:
    return max(abs(a[step][key] - b[step][key]) for step in steps)
