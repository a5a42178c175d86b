"""Sizes of the reliability battery: short in the test suite, full under ``scripts/reliability.sh``."""

from __future__ import annotations

import os

FULL = os.environ.get("OIKYO_RELIABILITY_FULL") == "1"


def size(short, full):
    """``full`` under ``scripts/reliability.sh`` (``OIKYO_RELIABILITY_FULL=1``), ``short`` in the suite."""
    return full if FULL else short
