"""Fixtures for the job-system tests: the fake recipe, a model folder, a split dataset, both stores.

``backend`` runs a test once on SQLite and once on PostgreSQL (skipped when no server is reachable).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jobhelpers  # noqa: E402


@pytest.fixture
def fake_recipe(monkeypatch):
    """The fast fake recipe, here and in worker processes."""
    jobhelpers.use_fake_recipe(monkeypatch)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    """The store backend under test: the workspace's SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")
    return request.param


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return jobhelpers.make_model_dir(tmp_path / "fake-model")


@pytest.fixture
def dataset(tmp_path):
    return jobhelpers.make_dataset(tmp_path)
