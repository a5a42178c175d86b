"""Bad requests get a 4xx in OpenAI's error shape (never a 5xx), and the server keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID, chat

from oikyo.serve.gateway import keys


def _still_serving(replica) -> None:
    assert chat(replica.client(), BASE_ID, max_tokens=2).usage.completion_tokens == 2


def _error(exc_info) -> dict:
    body = exc_info.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_unknown_model_is_a_404_in_openai_shape(replica):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(replica.client(), "no-such-model")
    error = _error(caught)
    assert error["code"] == "model_not_found" and error["param"] == "model" and "no-such-model" in error["message"]
    _still_serving(replica)


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),  # top_logprobs without logprobs
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"logit_bias": {"not-a-token": 5}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"999999999": 5}}, "logit_bias"),  # beyond the vocabulary (checked by the engine)
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}, "response_format"),
])
def test_invalid_parameters_are_a_400_naming_the_parameter(replica, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(replica.client(), BASE_ID, **params)
    error = _error(caught)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    _still_serving(replica)


@pytest.mark.parametrize("messages", [[], [{"role": "wizard", "content": "hi"}], [{"role": "user"}], "hello"])
def test_malformed_messages_are_a_400(replica, messages):
    with pytest.raises(openai.BadRequestError) as caught:
        replica.client().chat.completions.create(model=BASE_ID, messages=messages, max_tokens=2)
    _error(caught)
    _still_serving(replica)


def test_a_prompt_longer_than_the_context_is_a_400(replica):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(replica.client(), BASE_ID, content="word " * 3000)
    assert _error(caught)["code"] == "context_length_exceeded"
    _still_serving(replica)


def test_not_json_missing_model_unknown_route_and_wrong_method(replica):
    auth = {"Authorization": f"Bearer {replica.key}"}
    cases = [
        httpx.post(f"{replica.url}/v1/chat/completions", content=b"{not json", headers=auth),
        httpx.post(f"{replica.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                   headers=auth),
        httpx.get(f"{replica.url}/v1/nothing-here", headers=auth),
        httpx.get(f"{replica.url}/v1/chat/completions", headers=auth),
    ]
    assert [r.status_code for r in cases] == [400, 400, 404, 405]
    for response in cases:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    _still_serving(replica)


def test_no_key_wrong_key_and_revoked_key_are_401(replica):
    url = f"{replica.url}/v1"
    assert httpx.get(f"{url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=url, api_key="oik-not-a-real-key", max_retries=0).models.list()
    assert _error(caught)["code"] == "invalid_api_key"
    record, secret = keys.create("soon revoked")
    client = openai.OpenAI(base_url=url, api_key=secret, max_retries=0)
    assert client.models.list().data
    keys.revoke(record.id)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    with pytest.raises(openai.AuthenticationError):
        chat(client, BASE_ID)
    assert httpx.get(f"{replica.url}/health").status_code == 200  # the one open route
    _still_serving(replica)
