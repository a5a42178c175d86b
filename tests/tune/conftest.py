"""Fixtures shared by the tuning tests: a small split conversations dataset and a fake model folder
(the fast fake recipe of tests/jobs never loads it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "jobs"))


@pytest.fixture
def dataset(tmp_path):
    import jobhelpers

    return jobhelpers.make_dataset(tmp_path)


@pytest.fixture
def model_dir(tmp_path):
    import jobhelpers

    return jobhelpers.make_model_dir(tmp_path / "fake-model")
