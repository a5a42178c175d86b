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
import sys
from pathlib import Path

import pytest
from fuzzhelpers import fuzz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # uvicorn in a thread

from serving_fixtures import ThreadServer  # noqa: E402

TOKEN = "fuzz-login-token-0123456789"


@pytest.fixture
def bundled_model_linked(request):
    """The session's converted bundled model in the test's workspace, where the bundled model exists.

    ``POST /runs`` resolves the default model, the bundled one: in an empty workspace the first such
    request would convert its GGUF file (most of this test's time, and the suite converts it once
    already). Linked here, every request gets the same answer as before, without the conversion."""
    try:
        return request.getfixturevalue("bundled_in_workspace")
    except pytest.skip.Exception:  # no bundled model here: the first POST /runs converts nothing either
        return None


def test_the_platform_api_gives_no_server_error_and_keeps_to_its_schema(tmp_path, bundled_model_linked):
    from oikyo.api.app import create_app

    server = ThreadServer(create_app(TOKEN))
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
