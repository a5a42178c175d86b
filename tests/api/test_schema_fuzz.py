"""Schema fuzzing of the platform API with schemathesis's own CLI (from PyPI, a dev dependency).

The server runs in a thread on a free loopback port in the test's empty workspace, and ``st run``
reads its OpenAPI document (``/api/v1/openapi.json``, behind the login token) and sends generated
requests: examples, random bodies and parameters (a fixed seed and example count here; the longer
pass, with schemathesis's coverage phase and more examples, is ``scripts/reliability.sh``, through
``OIKYO_FUZZ_EXAMPLES`` and ``OIKYO_FUZZ_PHASES``), and stateful sequences
that follow the links between operations. No answer may be a 5xx, and every answer must match the
schema the document gives for it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TOKEN = "fuzz-login-token-0123456789"
ST = Path(sys.executable).with_name("st")


class _Server:
    """The platform app under uvicorn in a daemon thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the platform server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


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


def test_the_platform_api_gives_no_server_error_and_keeps_to_its_schema(tmp_path):
    from oikyo.api.app import create_app

    server = _Server(create_app(TOKEN))
    try:
        done = fuzz(f"{server.url}/api/v1/openapi.json", TOKEN, tmp_path / "junit.xml",
                    max_examples=int(os.environ.get("OIKYO_FUZZ_EXAMPLES", "5")),
                    phases=os.environ.get("OIKYO_FUZZ_PHASES", "examples,fuzzing,stateful"))
    finally:
        server.stop()
    summary = done.stdout[done.stdout.rfind("SUMMARY"):]
    assert done.returncode == 0, f"schemathesis found problems:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert "Tested: " in summary and " passed" in summary, summary


@pytest.mark.parametrize("method, path, body, status", [
    # what the fuzzer found answering 500 (an empty reference reached code that expected a name)
    ("GET", "/api/v1/leaderboard?dataset=&split=null", None, 400),
    ("POST", "/api/v1/deployments", {"model": ""}, 400),
    ("POST", "/api/v1/ratings/sessions", {"a": "x", "b": "y", "dataset": ""}, 422),
])
def test_what_the_fuzzer_found_is_a_client_error(api, method, path, body, status):
    answer = api.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]
