"""Helpers for the browser tests (not a test module): the server thread, the page wrapper, the token.

Screenshots go to ``$OIKYO_TEST_ARTIFACTS/web`` (default ``test-artifacts/web`` in the repository,
which git ignores), named ``<test>-<step>.png``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-test-token-0123456789"


def artifacts_dir() -> Path:
    root = Path(os.environ.get("OIKYO_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path = root / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ThreadServer:
    """The platform server (API and dashboard) under uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


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
