"""A fast stand-in for the training recipe, honouring docs/contracts-training.md.

Selected with ``OIKYO_RECIPE=fake_recipe`` (this folder on PYTHONPATH), so worker processes use it
too. The config side is the real one (:mod:`oikyo.train.config`); only training is faked: each
"step" sleeps ``FAKE_STEP_TIME`` seconds and reports a loss that depends only on the seed and the
step, checkpoints are written like the real recipe's (atomic folder, ``COMPLETE`` written last,
``trainer_state.json``), and a run resumes from its newest complete checkpoint.

Knobs (environment, so they reach worker processes): ``FAKE_STEP_TIME`` (default 0.01),
``FAKE_FAIL_AT`` (a step) with ``FAKE_FAIL_WITH`` = ``oom`` | ``context`` | ``crash``;
``FAKE_LOSS_FROM_LR=1`` adds ``|log10(train.lr) + 4|`` to every eval_loss (so lr 1e-4 is best and
the tuning tests can tell bad trials apart); ``FAKE_FAIL_LR_ABOVE`` (a float) makes runs whose
train.lr is above it fail at step 2.
Every executed step is appended to ``<run_dir>/fake_steps.jsonl`` as ``{"step", "pid"}``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from oikyo.train import TrainingError
from oikyo.train.config import ConfigError, TrainConfig, config_hash, load_config  # noqa: F401 - the contract

DEFAULT_STEPS = 20


@dataclass
class TrainResult:
    status: str
    steps: int
    tokens: int
    final_checkpoint: Path
    best_checkpoint: Path | None
    best_eval_loss: float | None
    output_dir: Path


def fake_loss(seed: int, step: int, total: int) -> float:
    noise = random.Random(seed * 1_000_003 + step).random()
    return 2.0 * math.exp(-3.0 * step / total) + 0.05 * noise


def _latest(run_dir: Path) -> tuple[int, dict]:
    root = run_dir / "checkpoints"
    best = (0, {})
    if root.is_dir():
        for folder in root.glob("step-*"):
            if (folder / "COMPLETE").exists():
                state = json.loads((folder / "trainer_state.json").read_text())
                if state["step"] > best[0]:
                    best = (state["step"], state)
    return best


def _save(run_dir: Path, step: int, eval_loss: float | None) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    if (final / "COMPLETE").exists():
        return final
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "adapter_model.safetensors").write_bytes(b"fake weights")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "eval_loss": eval_loss}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    (final / "COMPLETE").write_text("")
    return final


def lr_penalty(lr: float) -> float:
    """What FAKE_LOSS_FROM_LR=1 adds to eval_loss: 0 at lr 1e-4, growing by 1 per decade away from it."""
    if os.environ.get("FAKE_LOSS_FROM_LR") != "1":
        return 0.0
    return abs(math.log10(lr) + 4.0)


def _maybe_fail_lr(step: int, lr: float) -> None:
    limit = os.environ.get("FAKE_FAIL_LR_ABOVE")
    if limit and step == 2 and lr > float(limit):
        raise TrainingError(f"the loss diverged at step 2 (lr {lr:g} is too high)")


def _maybe_fail(step: int) -> None:
    if os.environ.get("FAKE_FAIL_AT") != str(step):
        return
    kind = os.environ.get("FAKE_FAIL_WITH", "crash")
    if kind == "oom":
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)")
    if kind == "context":
        raise TrainingError("row 3 of the train split is 2051 tokens long, longer than the model's context "
                            "(2048 tokens); shorten it or raise data.max_length on a model with a longer context")
    raise ValueError("something unexpected broke")


def run_training(config: TrainConfig, *, run_dir: Path, model_dir: Path, train_rows, eval_rows, on_metrics,
                 should_stop, log) -> TrainResult:
    rows = list(train_rows())
    if not rows:
        raise TrainingError("the training split is empty")
    has_eval = eval_rows is not None and any(True for _ in eval_rows())
    total = config.train.max_steps or DEFAULT_STEPS
    seed = config.train.seed
    save_every = config.checkpoint.save_every or total
    eval_every = config.train.eval_every or total
    step_time = float(os.environ.get("FAKE_STEP_TIME", "0.01"))
    start, _ = _latest(run_dir)
    if start:
        log(f"resuming from checkpoint step {start}")
    best_loss, best_path, eval_loss, last_saved = None, None, None, start
    steps_file = run_dir / "fake_steps.jsonl"
    for step in range(start + 1, total + 1):
        if should_stop():
            path = _save(run_dir, step - 1, eval_loss)
            log(f"stopped at step {step - 1}; checkpoint {path.name}")
            return TrainResult("cancelled", step - 1, (step - 1) * 64, path, best_path, best_loss, run_dir / "output")
        time.sleep(step_time)
        _maybe_fail(step)
        _maybe_fail_lr(step, config.train.lr)
        with open(steps_file, "a") as handle:
            handle.write(json.dumps({"step": step, "pid": os.getpid()}) + "\n")
        on_metrics(step, {"loss": fake_loss(seed, step, total), "lr": 1e-3 * (1 - step / total),
                          "tokens_per_s": 1000.0, "tokens": step * 64, "epoch": step / total})
        if has_eval and (step % eval_every == 0 or step == total):
            eval_loss = fake_loss(seed + 1, step, total) + lr_penalty(config.train.lr)
            on_metrics(step, {"eval_loss": eval_loss})
        if step % save_every == 0 or step == total:
            path = _save(run_dir, step, eval_loss)
            last_saved = step
            if eval_loss is not None and (best_loss is None or eval_loss < best_loss):
                best_loss, best_path = eval_loss, path
    output = run_dir / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "adapter_config.json").write_text(json.dumps({"r": 16, "base": str(model_dir)}))
    (output / "adapter_model.safetensors").write_bytes(b"fake adapter")
    log(f"trained {total} steps")
    final = run_dir / "checkpoints" / f"step-{last_saved:06d}"
    return TrainResult("succeeded", total, total * 64, final, best_path, best_loss, output)


def merge_adapter(base_model_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps({"merged_from": str(adapter_dir)}))
    (out_dir / "model.safetensors").write_bytes(b"merged")
    return out_dir
