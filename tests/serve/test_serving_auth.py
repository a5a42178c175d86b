"""Who may call the serving API (issue 22): every route of the router and of the replica app but
``/health`` answers 401 in OpenAI's shape without a valid key (no key, a wrong, revoked or malformed
one, a key in the query string, the router's internal replica token), metrics included.

The routes are read from the apps themselves, so a route added later is walked without a test change.
"""

from __future__ import annotations

import re

import httpx
from fastapi.routing import APIRoute
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import ROUTER_TOKEN

PUBLIC = {"/health"}


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route of ``app`` but the public ones, with path parameters filled in."""
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path not in PUBLIC:
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                out.append((method, re.sub(r"\{[^}]+\}", "x1", route.path)))
    return out


def _refusals(url: str, routes, key: str) -> dict[str, str]:
    """What each route answered to callers without a valid key, when it was not a 401 in OpenAI's shape."""
    from oikyo.serve.gateway import keys

    revoked_record, revoked = keys.create("revoked")
    keys.revoke(revoked_record.id)
    callers = {
        "no key": {},
        "wrong key": {"Authorization": "Bearer oik-" + "x" * 43},
        "revoked key": {"Authorization": f"Bearer {revoked}"},
        "basic scheme": {"Authorization": f"Basic {key}"},
        "bare key": {"Authorization": key},
        "empty bearer": {"Authorization": "Bearer"},
        "replica token": {"Authorization": f"Bearer {ROUTER_TOKEN}"},
        "key in query": {},
    }
    wrong = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path in routes:
            for who, headers in callers.items():
                params = {"api_key": key, "key": key} if who == "key in query" else None
                body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi"}
                response = client.request(method, path, headers=headers, params=params,
                                          json=body if method in ("POST", "PUT", "PATCH") else None)
                error = response.json().get("error") if response.headers.get("content-type", "").startswith(
                    "application/json") else None
                if response.status_code != 401 or not isinstance(error, dict) or error.get("code") != "invalid_api_key":
                    wrong[f"{who}: {method} {path}"] = f"{response.status_code} {response.text[:120]}"
                elif response.headers.get("www-authenticate") != "Bearer":
                    wrong[f"{who}: {method} {path}"] = "no WWW-Authenticate: Bearer"
                assert key not in response.text
    return wrong


def test_every_router_route_refuses_callers_without_a_valid_key(routed):
    routes = _routes(routed.app)
    paths = {path for _, path in routes}
    assert {"/metrics", "/openapi.json", "/v1/models", "/v1/chat/completions", "/v1/completions",
            "/v1/feedback"} <= paths
    wrong = _refusals(routed.url, routes, routed.key)
    assert not wrong, f"router routes open without a valid key: {wrong}"
    print(f"router: {len(routes)} routes x 8 callers walked")
    # The same key in the header gets in everywhere it is refused without it (the walk is not vacuous).
    headers = {"Authorization": f"Bearer {routed.key}"}
    assert httpx.get(f"{routed.url}/metrics", headers=headers, timeout=30).status_code == 200
    assert httpx.get(f"{routed.url}/v1/models", headers=headers, timeout=30).status_code == 200


def test_every_replica_route_refuses_callers_without_a_valid_key(replica):
    routes = _routes(replica.app)
    assert {"/stats", "/v1/models", "/v1/chat/completions", "/v1/completions"} <= {p for _, p in routes}
    wrong = _refusals(replica.url, routes, replica.key)
    assert not wrong, f"replica routes open without a valid key: {wrong}"
    print(f"replica: {len(routes)} routes x 8 callers walked")
    assert httpx.get(f"{replica.url}/stats", headers={"Authorization": f"Bearer {replica.key}"},
                     timeout=30).status_code == 200


def test_no_docs_or_schema_pages_are_served_without_a_key(routed, replica):
    for url in (routed.url, replica.url):
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"):
            response = httpx.get(url + path, timeout=30)
            assert response.status_code in (401, 404), (url, path, response.status_code)
            assert "swagger" not in response.text.lower()


def test_keys_and_the_replica_token_never_reach_logs_the_request_log_or_bodies(routed, versions, workspace, caplog):
    """With requests logged, a served request, wrong keys and the router's own replica token leave no
    secret in the workspace (the database and its WAL: the served_requests table), the logs or the bodies."""
    import logging

    from serving_fixtures import chat, wait_for

    caplog.set_level(logging.DEBUG)
    wrong = "oik-" + "w" * 43
    bodies = [chat(routed.client(), versions["support"], max_tokens=3).model_dump_json()]
    for key in (wrong, ROUTER_TOKEN, routed.key + "x"):
        response = httpx.post(f"{routed.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert response.status_code == 401
        bodies.append(response.text + str(response.headers))
    from oikyo.store import db
    from oikyo.store.models import ServedRequest

    def logged():
        with db.session() as s:
            return s.query(ServedRequest).count()

    wait_for(logged)
    files = [p for p in workspace.rglob("*") if p.is_file()]
    texts = bodies + [p.read_bytes().decode("latin-1") for p in files] + [r.getMessage() for r in caplog.records]
    leaks = [name for name, secret in (("key", routed.key), ("wrong key", wrong), ("replica token", ROUTER_TOKEN))
             if any(secret in text for text in texts)]
    assert not leaks, leaks
