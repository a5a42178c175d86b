"""Schema fuzzing with schemathesis's own CLI (from PyPI, a dev dependency), shared by the platform
API's test (tests/api/test_schema_fuzz.py) and the serving API's (tests/serve/test_openapi.py).

``OIKYO_FUZZ_EXAMPLES`` and ``OIKYO_FUZZ_PHASES`` set the examples per operation and the phases (the
tests' defaults are a short pass; ``scripts/reliability.sh`` sets a long one), ``OIKYO_FUZZ_TIMEOUT_S``
the time ``st run`` may take.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ST = Path(sys.executable).with_name("st")


def fuzz(spec_url: str, token: str, report: Path, *, max_examples: int, phases: str,
         seed: int = 1) -> subprocess.CompletedProcess:
    """``st run`` against ``spec_url``: no 5xx, answers that match their schemas."""
    if not ST.exists():
        pytest.skip(f"schemathesis's st is not installed beside {sys.executable} (pip install 'oikyo[dev]')")
    done = subprocess.run(
        [str(ST), "run", spec_url, "-H", f"Authorization: Bearer {token}", "--seed", str(seed),
         "--checks", "not_a_server_error,response_schema_conformance", "--phases", phases,
         "--max-examples", str(max_examples), "--request-timeout", "120", "--workers", "1",
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        capture_output=True, text=True, timeout=float(os.environ.get("OIKYO_FUZZ_TIMEOUT_S", "900")))
    counts = re.search(r"\d+ generated[^\n]*", done.stdout)
    print(f"schemathesis on {spec_url} ({phases}, {max_examples} examples, seed {seed}): "
          f"{counts.group(0) if counts else 'no count'}")
    return done
