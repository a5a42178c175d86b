"""Helpers for the study-driver tests (tests/tune/test_study*.py, test_tune_cli.py); not a test module.

The driver runs in the test's process (or in child processes, for the two-driver and resume tests)
over the fast fake recipe of tests/jobs, with in-process worker threads or worker processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

TUNE_TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TUNE_TESTS.parent / "jobs"))

import jobhelpers  # noqa: E402
from jobhelpers import HEARTBEAT_S, LEASE_S  # noqa: E402,F401

BASE = ["train.max_steps=20", "checkpoint.save_every=5", "train.eval_every=5"]
LR_SPACE = {"params": {"train.lr": {"type": "float", "low": 1.0e-6, "high": 0.1, "log": True}}}


def lr_space(data: dict | None = None):
    from oikyo.tune.space import Space

    return Space.from_dict(data or LR_SPACE)


def new_study(dataset, model_dir, *, base: list[str] | None = None, **options):
    """A study over the fake recipe on ``dataset`` (20 steps, evaluations every 5), lr space by default."""
    from oikyo.tune import study

    options.setdefault("space", lr_space())
    options.setdefault("n_trials", 4)
    return study.create_study(None, base if base is not None else BASE, dataset=dataset.id, model=str(model_dir),
                              **options)


class WorkerThreads:
    """``count`` workers in threads of this process (so monkeypatches reach the training they run)."""

    def __init__(self, count: int = 1):
        from oikyo.jobs.worker import Worker

        self.workers = [Worker(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, poll_s=0.05) for _ in range(count)]
        self.threads = [threading.Thread(target=w.run, daemon=True) for w in self.workers]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for thread in self.threads:
            thread.join(timeout=30)


def steps_of(run) -> int:
    """How many training steps the fake recipe executed for ``run``."""
    path = Path(run.run_dir) / "fake_steps.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def start_driver_process(ref: str, log: Path, poll_s: float = 0.05) -> subprocess.Popen:
    """A driver in a child process (same workspace and environment): ``study.run_study(ref)``."""
    code = ("import sys\nfrom oikyo.tune import study\n"
            f"study.run_study({ref!r}, log=lambda line: print(line, flush=True), poll_s={poll_s})\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=dict(os.environ))


def runs_of(study_id: str):
    from oikyo.tune import study

    return study.study_runs(study_id)


def read_log(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def wait_for(predicate, timeout: float = 60.0, message: str = "condition"):
    return jobhelpers.wait_for(predicate, timeout=timeout, interval=0.05, message=message)


@pytest.fixture
def tune_env(monkeypatch):
    """The fake recipe (here and in child processes) and a clean Optuna storage cache."""
    from oikyo.tune import study

    jobhelpers.use_fake_recipe(monkeypatch)
    study.reset_storage()
    yield
    study.reset_storage()


def dumps(value) -> str:
    return json.dumps(value, sort_keys=True)
