"""The reliability battery (issue 22, RELIABILITY.md): fault injection, hostile input and load.

Each check runs briefly in the test suite and at full size under ``scripts/reliability.sh``, which sets
``OIKYO_RELIABILITY_FULL=1`` (the :data:`FULL` flag; ``battery.size(short, full)`` picks a count).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "api"))  # rawasgi: raw paths sent to an ASGI app
