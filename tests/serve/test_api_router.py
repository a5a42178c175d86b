"""The router in front of a replica (both in-process): model names, streaming relay, disconnects, replica failover."""

from __future__ import annotations

import time

import httpx
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import DEPLOYMENT, chat, wait_for


def test_models_through_the_router_name_the_deployment_and_every_adapter(routed, versions):
    ids = [m.id for m in routed.client().models.list()]
    assert ids[0] == DEPLOYMENT and set(versions.values()) <= set(ids)


def test_streamed_and_whole_answers_agree_through_the_router(routed, versions):
    client = routed.client()
    whole = chat(client, versions["support"], max_tokens=15).choices[0].message.content
    chunks = list(chat(client, versions["support"], max_tokens=15, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].usage.completion_tokens == 15  # the replica's usage reaches the client


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_cancels_the_generation_behind_the_router(routed, versions, stream, monkeypatch):
    engine = routed.engine
    # The tiny model makes 1500 tokens in about as long as the client waits plus the two hops notice it is
    # gone; a few milliseconds per step make the generation surely outlast that, so only a cancel ends it.
    forward = engine._forward

    def slow_forward(*args, **kwargs):
        time.sleep(0.004)
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_forward", slow_forward)
    before = engine.stats()["requests_cancelled"]
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 1500, "temperature": 0, "stream": stream}
    headers = {"Authorization": f"Bearer {routed.key}"}
    if stream:
        with httpx.stream("POST", f"{routed.url}/v1/chat/completions", json=body, headers=headers) as response:
            for i, _line in enumerate(response.iter_lines()):
                if i >= 6:
                    break  # leaving the block closes the connection mid-stream
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{routed.url}/v1/chat/completions", json=body, headers=headers, timeout=1.5)
    wait_for(lambda: engine.stats()["requests_cancelled"] > before, timeout=10)
    wait_for(lambda: engine.stats()["active_sequences"] == 0, timeout=10)
    routed.app.state.recorder.flush()
    from oikyo.serve.gateway import request_log

    assert 499 in [r["status"] for r in request_log.request_rows(DEPLOYMENT)]
    assert chat(routed.client(), DEPLOYMENT, max_tokens=2).usage.completion_tokens == 2  # still serving


def test_a_replica_that_refuses_connections_is_skipped(routed, versions):
    from oikyo.serve.gateway.replicas import Replica

    pool = next(iter(routed.app.state.routing.pools.values()))
    dead = Replica(id="dead", url="http://127.0.0.1:9", state="ready")  # nothing listens on port 9
    pool.replicas.insert(0, dead)
    for _ in range(3):
        assert chat(routed.client(), DEPLOYMENT, max_tokens=2).usage.completion_tokens == 2
        assert list(chat(routed.client(), DEPLOYMENT, max_tokens=2, stream=True))
    assert dead.state == "suspect" and dead.in_flight == 0
