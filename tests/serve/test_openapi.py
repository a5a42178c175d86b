"""The serving API's OpenAPI document: published (GET /openapi.json behind a key, `oikyo deployments
openapi`, docs/serving-openapi.json kept current), and what the server answers matches its own schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import DEPLOYMENT

from oikyo.serve.gateway.openapi import spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving-openapi.json"


def _check(document: dict, schema_name: str, body) -> None:
    """``body`` is valid against components/schemas/``schema_name`` of ``document`` (refs resolved inside it)."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", **document})
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not problems, f"{schema_name} breaks its schema: {problems}\n{json.dumps(body)[:2000]}"


def test_the_published_document_is_current():
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(spec())), \
        "docs/serving-openapi.json is stale: run `oikyo deployments openapi --out docs/serving-openapi.json`"


def test_the_document_is_served_with_a_key_only(routed):
    assert httpx.get(f"{routed.url}/openapi.json").status_code == 401
    served = httpx.get(f"{routed.url}/openapi.json", headers={"Authorization": f"Bearer {routed.key}"})
    assert served.status_code == 200
    document = served.json()
    assert document["info"]["title"] == f"oikyo deployment {DEPLOYMENT}"
    assert set(document["paths"]) >= {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback"}


@pytest.mark.parametrize("path, schema, body", [
    ("/v1/chat/completions", "ChatCompletion",
     {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0}),
    ("/v1/chat/completions", "ChatCompletion",
     {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "logprobs": True, "top_logprobs": 2, "n": 2,
      "temperature": 0.7, "seed": 1, "presence_penalty": 0.5}),
    ("/v1/completions", "Completion", {"prompt": ["Once upon", "a time"], "max_tokens": 4, "logprobs": 2}),
    ("/v1/chat/completions", "Error", {"messages": [], "max_tokens": 5}),
    ("/v1/completions", "Error", {"prompt": "x", "max_tokens": -1}),
    ("/v1/feedback", "Error", {"response_id": "x"}),
])
def test_answers_match_their_schemas(routed, path, schema, body):
    document = spec()
    request = {"model": DEPLOYMENT, **body}
    if schema != "Error":  # what the server takes, the document takes too
        _check(document, _request_schema(path), request)
    answer = httpx.post(f"{routed.url}{path}", json=request, headers={"Authorization": f"Bearer {routed.key}"},
                        timeout=60)
    assert answer.status_code == (400 if schema == "Error" else 200), answer.text
    _check(document, schema, answer.json())
    if body.get("logprobs"):  # asked for: present, one entry per generated token
        choice = answer.json()["choices"][0]
        entries = choice["logprobs"]["content"] if schema == "ChatCompletion" else choice["logprobs"]["tokens"]
        assert len(entries) == answer.json()["usage"]["completion_tokens"] // len(answer.json()["choices"])


def _request_schema(path: str) -> str:
    return {"/v1/chat/completions": "ChatCompletionRequest", "/v1/completions": "CompletionRequest",
            "/v1/feedback": "FeedbackRequest"}[path]


def test_models_feedback_and_a_missing_key_match_their_schemas(routed):
    document, auth = spec(), {"Authorization": f"Bearer {routed.key}"}
    _check(document, "ModelList", httpx.get(f"{routed.url}/v1/models", headers=auth).json())
    answer = httpx.post(f"{routed.url}/v1/chat/completions", headers=auth, timeout=60,
                        json={"model": DEPLOYMENT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    rated = httpx.post(f"{routed.url}/v1/feedback", headers=auth, json={"response_id": answer.json()["id"], "rating": 1})
    assert rated.status_code == 200, rated.text
    _check(document, "Feedback", rated.json())
    anonymous = httpx.get(f"{routed.url}/v1/models")
    assert anonymous.status_code == 401
    _check(document, "Error", anonymous.json())


def test_schema_fuzzing_of_the_serving_api_finds_no_server_error(routed, tmp_path):
    """schemathesis's CLI against the router's own document (see tests/api/test_schema_fuzz.py), whose
    ``model`` examples are the served ids; six operations, so the coverage phase is cheap enough here."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
    from fuzzhelpers import fuzz

    done = fuzz(f"{routed.url}/openapi.json", routed.key, tmp_path / "junit.xml",
                max_examples=int(os.environ.get("OIKYO_FUZZ_EXAMPLES", "5")),
                phases=os.environ.get("OIKYO_FUZZ_PHASES", "examples,coverage,fuzzing,stateful"))
    assert done.returncode == 0, f"schemathesis found problems:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    generated = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert generated and int(generated.group(1)) >= 30, done.stdout[-3000:]  # it really sent requests
