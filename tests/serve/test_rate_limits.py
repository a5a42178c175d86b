"""Rate limits per API key on a deployment's router (issue 22): a key over its limit gets 429 with
Retry-After, in OpenAI's shape (the official client raises RateLimitError), while other keys are served;
after Retry-After it is served again. Off by default."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import DEPLOYMENT, ROUTER_TOKEN, ThreadServer, chat, metric_sample


@pytest.fixture
def limited(api_engine, api_model_dir, versions):
    """A router allowing each key 30 requests per minute in bursts of 2 (one more every 2 s), before an
    in-process replica; yields (router url, key A, key B)."""
    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.ab import Variant
    from oikyo.serve.gateway.httpapi import shared_token, store_keys
    from oikyo.serve.gateway.ratelimit import RateLimiter
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.replicas import PoolSpec, StaticPool
    from oikyo.serve.gateway.router import Routing, create_router_app
    from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

    load_dir = str(api_model_dir)
    names = ServedNames(load_dir, [ModelSpec(id="tiny-base", kind="base", load_dir=load_dir, base_model=load_dir)])
    replica_server = ThreadServer(create_replica_app(api_engine, names, authenticate=shared_token(ROUTER_TOKEN),
                                                     blocking_auth=False))
    mv = versions["support"]
    pool = StaticPool(PoolSpec(name=mv, load_dir=load_dir, models=[
        ModelSpec(id=mv, kind="adapter", load_dir=load_dir, adapter_dir=None, base_model=load_dir)]),
        [replica_server.url])
    routing = Routing(DEPLOYMENT, [Variant(label=mv, model=mv, weight=1.0)], {load_dir: pool}, {mv: load_dir},
                      {load_dir: names})
    app = create_router_app(DEPLOYMENT, routing, authenticate=store_keys(), token=ROUTER_TOKEN,
                            rate_limiter=RateLimiter(requests_per_minute=30, burst=2))
    router_server = ThreadServer(app)
    _, key_a = keys.create("a")
    _, key_b = keys.create("b")
    yield router_server.url, key_a, key_b
    router_server.stop()
    replica_server.stop()


def _models(url: str, key: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_one_key_over_its_limit_waits_while_another_is_served(limited):
    url, key_a, key_b = limited
    statuses = []
    for _ in range(5):  # a burst of 2 is allowed; the refill (one per 2 s) cannot keep up with 5 quick requests
        response = _models(url, key_a)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    refused = response
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "30 requests per minute" in error["message"] and key_a not in refused.text
    # Another key has its own bucket: served at once, twice.
    assert [_models(url, key_b).status_code for _ in range(2)] == [200, 200]
    # The health check and the metrics are not limited.
    assert httpx.get(f"{url}/health", timeout=30).status_code in (200, 503)
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key_b}"}, timeout=30)
    assert metrics.status_code == 200  # not limited: key B has spent its burst
    assert metric_sample(metrics.text, "oikyo_rate_limited_total", deployment=DEPLOYMENT) == 1.0
    time.sleep(retry_after)
    assert _models(url, key_a).status_code == 200


def test_the_openai_client_raises_rate_limit_error(limited, versions):
    url, key_a, key_b = limited
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key_a, max_retries=0, timeout=60)
    with pytest.raises(openai.RateLimitError) as raised:
        for _ in range(5):
            chat(client, versions["support"], max_tokens=2)
    assert raised.value.status_code == 429 and int(raised.value.response.headers["Retry-After"]) >= 1
    assert raised.value.code == "rate_limit_exceeded"
    other = openai.OpenAI(base_url=f"{url}/v1", api_key=key_b, max_retries=0, timeout=60)
    assert chat(other, versions["support"], max_tokens=2).choices[0].message.content is not None


def test_unauthenticated_requests_get_401_not_429(limited):
    url, key_a, _ = limited
    for _ in range(4):
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer oik-wrong"}, timeout=30).status_code == 401
    assert _models(url, key_a).status_code == 200  # wrong keys spent nothing of a real key's bucket


def test_token_bucket_refills_at_its_rate():
    from oikyo.serve.gateway.ratelimit import RateLimiter

    now = [100.0]
    limiter = RateLimiter(requests_per_minute=6, burst=3, clock=lambda: now[0])  # one request per 10 s
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(10.0)
    assert limiter.take("other") == 0.0
    now[0] += 4.0
    assert limiter.take("k") == pytest.approx(6.0)  # refused requests spend nothing
    now[0] += 6.0
    assert limiter.take("k") == 0.0 and limiter.remaining("k") == 0
    now[0] += 1000.0
    assert limiter.remaining("k") == 3  # never more than the burst


def test_rate_limit_settings_are_checked_and_off_by_default():
    from oikyo.errors import OikyoError
    from oikyo.serve.gateway.deployments import DEFAULT_SETTINGS
    from oikyo.serve.gateway.ratelimit import check_settings, from_settings

    assert from_settings(DEFAULT_SETTINGS) is None
    limiter = from_settings({**DEFAULT_SETTINGS, "rate_limit_rpm": 120})
    assert limiter.burst == 120 and limiter.rate == 2.0
    for rpm, burst in ((0, None), (-5, None), ("10", None), (10, 0), (10, 2.5)):
        with pytest.raises(OikyoError):
            check_settings(rpm, burst)
    with pytest.raises(OikyoError, match="burst"):
        from oikyo.serve.gateway.ratelimit import RateLimiter

        RateLimiter(60, burst=0)
