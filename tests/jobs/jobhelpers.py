"""Helpers shared by the job-system tests (tests/jobs and tests/cli/test_train_cli.py); not a test module.

``use_fake_recipe`` selects :mod:`fake_recipe` (this folder) through ``OIKYO_RECIPE`` and puts this
folder on ``PYTHONPATH``, so worker processes started by a test use it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

JOBS_TESTS = Path(__file__).resolve().parent

# Fast timings for tests: leases lapse in seconds, heartbeats several times a second.
LEASE_S = 2.0
HEARTBEAT_S = 0.25


def use_fake_recipe(monkeypatch) -> None:
    """Run the job system over the fast fake recipe (in this process and in worker processes)."""
    monkeypatch.syspath_prepend(str(JOBS_TESTS))
    monkeypatch.setenv("OIKYO_RECIPE", "fake_recipe")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(JOBS_TESTS), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("FAKE_STEP_TIME", "0.01")
    monkeypatch.setenv("OIKYO_WORKER_LEASE_S", str(LEASE_S))
    monkeypatch.setenv("OIKYO_WORKER_HEARTBEAT_S", str(HEARTBEAT_S))
    monkeypatch.setenv("OIKYO_WORKER_POLL_S", "0.1")
    for name in ("FAKE_FAIL_AT", "FAKE_FAIL_WITH", "FAKE_LOSS_FROM_LR", "FAKE_FAIL_LR_ABOVE"):
        monkeypatch.delenv(name, raising=False)


def make_model_dir(folder: Path) -> Path:
    """A folder that passes as a local Hugging Face model (the fake recipe never loads it)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    (folder / "model.safetensors").write_bytes(b"not real weights")
    return folder


def write_chat_rows(path: Path, n: int = 40) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_dataset(tmp_path: Path, name: str = "sums", n: int = 40):
    """A split conversations dataset version (train and validation rows)."""
    from oikyo.data import split, versions

    versions.import_dataset(write_chat_rows(tmp_path / f"{name}.jsonl", n), name=name)
    version, _existed = split.split_dataset(name, validation=0.2, test=0.0, seed=0)
    return version


def submit(dataset, model_dir, *overrides: str, name: str | None = None):
    """Queue a run on ``dataset`` (max_steps 20, checkpoints and evaluations every 5 steps by default)."""
    from oikyo.jobs import training

    defaults = ["train.max_steps=20", "checkpoint.save_every=5", "train.eval_every=5"]
    return training.submit_training(None, [*defaults, *overrides], dataset=dataset.id, model=str(model_dir),
                                    name=name)


def start_worker_process(*args: str, log: Path | None = None) -> subprocess.Popen:
    """``python -m oikyo.jobs.worker`` with the test's environment (fake recipe, fast leases)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "oikyo.jobs.worker", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=dict(os.environ))


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")
