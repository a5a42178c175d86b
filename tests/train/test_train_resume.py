"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted run.

The same config runs twice: once uninterrupted, once in a child process that is killed with
SIGKILL right after a mid-epoch checkpoint appears, then resumed (in this process) to the end.
The final weights must be equal tensor by tensor (torch.equal) and every metric reported after
the resume point (loss, grad_norm, lr, eval_loss) must be exactly the same float. Dropout is on,
so the torch RNG stream must be restored too; grad accumulation makes a step span batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
COMPARED = ("loss", "grad_norm", "lr", "eval_loss", "tokens", "epoch")


def _overrides(finetune: str) -> list[str]:
    # 40 rows, batch 4 -> 10 batches per epoch; grad_accum 2 -> 5 steps per epoch; 12 steps ~ 2.4 epochs.
    # The checkpoint at step 3 sits mid-epoch (epoch 0, batch 6 of 10).
    common = ["train.num_threads=1", "train.max_steps=12", "train.batch_size=4", "train.grad_accum=2",
              "train.lr=5e-3", "train.eval_every=4", "checkpoint.save_every=3", "checkpoint.keep_best=1",
              "lora.dropout=0.2", "train.seed=7"]
    if finetune == "full":  # packed blocks of ~2 examples, one block per batch: ~10 steps per epoch
        return [*common, "method.finetune=full", "data.packing=true", "data.max_length=64", "train.batch_size=1"]
    return [*common, "method.finetune=lora"]


def _run_child(tiny_dir, run_dir, metrics, overrides, sleep_s) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, str(HERE / "resume_child.py"), str(tiny_dir), str(run_dir), str(metrics),
            json.dumps(overrides), str(sleep_s)]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _metrics(path: Path) -> dict[int, dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return {m["step"]: m for m in map(json.loads, lines)}


def _weights(output: Path) -> dict[str, torch.Tensor]:
    files = sorted(output.glob("*.safetensors"))
    assert files, f"no weights in {output}"
    tensors = {}
    for file in files:
        tensors.update(load_file(str(file)))
    return tensors


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_dir, tmp_path, finetune):
    overrides = _overrides(finetune)

    # 1. Uninterrupted reference run (its own process, like the others), started alongside steps 2 and 3:
    # the runs share nothing but the model folder they read (each uses one thread; the killed one mostly sleeps).
    ref_dir, ref_metrics = tmp_path / "reference", tmp_path / "reference.jsonl"
    reference = _run_child(tiny_dir, ref_dir, ref_metrics, overrides, 0.0)

    try:
        # 2. The same run, killed with SIGKILL as soon as the step-3 checkpoint is complete.
        run_dir, killed_metrics = tmp_path / "interrupted", tmp_path / "killed.jsonl"
        child = _run_child(tiny_dir, run_dir, killed_metrics, overrides, 0.5)
        marker = run_dir / "checkpoints" / "step-000003" / "COMPLETE"
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, f"child ended early: {child.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        killed_at = max(_metrics(killed_metrics))
        assert killed_at < 12, "the child finished before it was killed"
        state = json.loads((marker.parent / "trainer_state.json").read_text())
        assert state["epoch"] == 0 and state["batch_index"] > 0  # a mid-epoch position

        # 3. Resume to the end in this process.
        from oikyo.train.config import load_config
        from oikyo.train.runner import run_training
        from trainhelpers import chat_rows

        rows = chat_rows(40)
        resumed, logs = {}, []
        result = run_training(
            load_config(None, overrides), run_dir=run_dir, model_dir=tiny_dir, train_rows=lambda: rows,
            eval_rows=lambda: rows[:8], on_metrics=lambda step, m: resumed.setdefault(step, m),
            should_stop=lambda: False, log=logs.append,
        )
        assert result.status == "succeeded" and result.steps == 12
        resumed_from = min(resumed) - 1
        assert resumed_from >= 3 and any(f"Resumed from step-{resumed_from:06d}" in line for line in logs), logs
        assert reference.wait(timeout=240) == 0, reference.stderr.read().decode()[-3000:]
    finally:
        if reference.poll() is None:  # a failure above: no reference run left behind
            reference.kill()
            reference.wait(30)

    # Bit-identical final weights.
    expected, got = _weights(ref_dir / "output"), _weights(run_dir / "output")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"

    # The loss curve after the resume point matches exactly (and before it, the killed run's).
    reference_metrics = _metrics(ref_metrics)
    for step in range(resumed_from + 1, 13):
        for key in COMPARED:
            assert resumed[step].get(key) == reference_metrics[step].get(key), (step, key)
    for step, metrics in _metrics(killed_metrics).items():
        assert metrics["loss"] == reference_metrics[step]["loss"], step
