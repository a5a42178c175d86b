"""Fixtures for the evaluation tests (defined in evalhelpers.py, shared with tests/cli/test_eval_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "jobs"))

from evalhelpers import adapter_version, json_dataset, tiny_adapter_dir  # noqa: E402,F401  (fixtures)

import pytest  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    """The store backend under test: the workspace's SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_url")
    return request.param
