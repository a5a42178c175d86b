"""Helpers for the browser tests (not a test module): the page wrapper, the token. The server thread is
the serving tests' ``ThreadServer`` (tests/serve/serving_fixtures.py).

Screenshots go to ``$OIKYO_TEST_ARTIFACTS/web`` (default ``test-artifacts/web`` in the repository,
which git ignores), named ``<test>-<step>.png``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-test-token-0123456789"


def artifacts_dir() -> Path:
    root = Path(os.environ.get("OIKYO_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path = root / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Dashboard:
    """One browser page on the test server, with the steps every test repeats."""

    def __init__(self, page, url: str, name: str):
        self.page, self.url, self.name = page, url, name
        self.errors: list[str] = []
        self.shots: list[Path] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and not self._expected(msg.text) else None)

    @staticmethod
    def _expected(text: str) -> bool:
        # Chromium logs every 4xx a fetch got; the tests provoke some on purpose (a bad upload, a wrong token).
        return bool(re.search(r"status of (401|404|409|422)", text))

    def goto(self, path: str, idle: bool = True):
        """Open ``path``; ``idle``: also wait until its fetches are done (not for a page that streams events)."""
        response = self.page.goto(self.url + path)
        if idle:
            self.page.wait_for_load_state("networkidle")
        return response

    def login(self, next_path: str = "/") -> None:
        self.goto(f"/login?next={next_path}")
        self.page.fill("#token", TOKEN)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url(self.url + next_path)

    def shot(self, step: str) -> Path:
        path = artifacts_dir() / f"{self.name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path
