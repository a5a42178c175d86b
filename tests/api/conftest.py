"""Fixtures shared by the REST API tests.

Every test already runs in its own empty workspace (the autouse fixture in tests/conftest.py). Here:

- ``token``: the server's login token; ``app``: the FastAPI app built with it.
- ``api``: a client sending ``Authorization: Bearer <token>`` (how scripts call the API; no CSRF).
- ``browser_client``: a client logged in through ``POST /api/v1/login``, holding the session and CSRF
  cookies like a browser; ``browser_client.csrf`` is the CSRF value to echo in ``X-CSRF-Token``.
- ``anon``: a client with no credentials at all.

All are ``fastapi.testclient.TestClient`` (an httpx client over ASGI): ``api.get("/api/v1/datasets")``.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

API = "/api/v1"


@pytest.fixture
def token() -> str:
    return "test-login-token-0123456789"


@pytest.fixture
def app(token):
    from oikyo.api.app import create_app

    return create_app(token)


@pytest.fixture
def api(app, token) -> TestClient:
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def anon(app) -> TestClient:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def browser_client(app, token) -> TestClient:
    with TestClient(app) as client:
        response = client.post(f"{API}/login", json={"token": token})
        assert response.status_code == 200, response.text
        client.csrf = response.json()["csrf_token"]
        assert client.cookies.get("oikyo_session")
        assert client.cookies.get("oikyo_csrf") == client.csrf
        yield client


def route_table(app) -> list[tuple[str, str]]:
    """Every (METHOD, path) the app serves, routers included (HEAD left out; mounts such as /static too).

    FastAPI 0.16x keeps included routers as lazy entries in ``app.routes``; older versions flatten
    them into plain routes. Both are read here, so tests that iterate the routes see all of them.
    """
    found = []
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            found += [(ctx.path, getattr(ctx.original_route, "methods", None)) for ctx in route.effective_route_contexts()]
        else:
            found.append((getattr(route, "path", None), getattr(route, "methods", None)))
    return [(method, path) for path, methods in found if path and methods for method in sorted(methods - {"HEAD"})]


@pytest.fixture
def app_routes(app) -> list[tuple[str, str]]:
    """:func:`route_table` of ``app``: every (METHOD, path) it serves."""
    return route_table(app)
