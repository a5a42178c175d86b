"""Fixtures for the evaluation tests (defined in evalhelpers.py, shared with tests/cli/test_eval_cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "jobs"))

from evalhelpers import adapter_version, json_dataset, tiny_adapter_dir  # noqa: E402,F401  (fixtures)
