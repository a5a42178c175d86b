"""Fixtures for the training tests: tiny random models, small datasets, a runner.

Tiny models (2 layers, hidden 64, the real SmolLM2 tokenizer) train in well under a second per
step on one CPU thread. Tests use ``train.num_threads=1``: on a shared 2-core machine, two OpenMP
threads can make tiny matrix products 100x slower, and one thread keeps runs reproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from trainhelpers import FAST, Run, chat_rows  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """A tiny random Llama (2 layers, hidden 64) with the bundled tokenizer (bundled_tokenizer_dir: the session
    fixture of tests/conftest.py, extracted once for the whole run)."""
    from oikyo.models.loading import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", bundled_tokenizer_dir, layers=2, hidden=64)


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from oikyo.models.loading import load_tokenizer

    return load_tokenizer(tiny_dir)


@pytest.fixture
def train_tiny(tiny_dir, tmp_path):
    """run_training on the tiny model: ``train_tiny(overrides, rows=..., eval_rows=..., run_dir=...)``."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    def run(overrides=(), rows=None, eval_rows="same", run_dir=None, should_stop=lambda: False, model_dir=None):
        config = load_config(None, [*FAST, *overrides])
        rows = chat_rows() if rows is None else rows
        evaluation = rows[:8] if eval_rows == "same" else eval_rows
        out = Run(result=None)
        out.result = run_training(
            config,
            run_dir=run_dir or tmp_path / "run",
            model_dir=model_dir or tiny_dir,
            train_rows=lambda: list(rows),
            eval_rows=(lambda: list(evaluation)) if evaluation is not None else None,
            on_metrics=lambda step, m: out.metrics.append((step, dict(m))),
            should_stop=should_stop,
            log=out.logs.append,
        )
        return out

    return run
