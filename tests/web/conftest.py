"""Fixtures for the browser tests: the real server on a free port, Debian's chromium driven by Playwright.

- ``server``: ``oikyo.api.app.create_app`` under uvicorn in a thread on 127.0.0.1 (the test's own
  workspace, from the autouse fixture); ``server.url``.
- ``browser``: one headless chromium for the session, launched from ``/usr/bin/chromium`` (install it
  with ``scripts/install-browser.sh``; Playwright's own browser download cannot work offline). Tests
  skip, saying why, only when that file is missing.
- ``dash``: a fresh browser page on the server with helpers (``goto``, ``login``, ``shot``); it fails
  the test when a page logs a JavaScript error. Screenshots: see browserhelpers.py.
- ``worker``: an in-process job worker (the real training recipe) in a thread, stopped afterwards.
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "jobs"))  # jobhelpers: datasets and waiting, shared with the job tests
sys.path.insert(0, str(HERE.parent / "serve"))  # serving_fixtures: uvicorn in a thread, shared with the serving tests

from browserhelpers import CHROMIUM, TOKEN, Dashboard
from serving_fixtures import ThreadServer


@pytest.fixture
def server(workspace):
    from oikyo.api.app import create_app

    running = ThreadServer(create_app(TOKEN))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/install-browser.sh` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def dash(browser, server, request):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name.removeprefix("test_"))[:60]
    board = Dashboard(page, server.url, name)
    yield board
    context.close()
    assert not board.errors, "the pages logged errors:\n" + "\n".join(board.errors)


@pytest.fixture
def worker(monkeypatch):
    """A job worker in a thread of this process, running the real recipe (fast leases and polls)."""
    from oikyo.jobs.worker import Worker

    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    running = Worker(lease_s=4, heartbeat_s=0.5, poll_s=0.1)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    yield running
    running.stop()
    thread.join(60)
