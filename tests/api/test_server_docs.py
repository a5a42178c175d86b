"""docs/server.md stays true to the app: every /api/v1 route is in its route table."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "server.md"
API = "/api/v1"


def test_every_api_route_is_documented(app_routes):
    text = DOC.read_text()
    missing = []
    for method, path in app_routes:
        if not path.startswith(API):
            continue
        relative = re.escape(path.removeprefix(API))
        pattern = re.sub(r"\\\{[^}]*\\\}", r"\\{[^}]+\\}", relative)  # any name for a path parameter
        if not re.search(rf"\|\s*{method}\s*\|\s*`{pattern}`\s*\|", text):
            missing.append(f"{method} {path}")
    assert not missing, f"docs/server.md's route table lacks {missing}"
