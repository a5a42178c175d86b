"""What the router and the replica apps share: OpenAI-shaped errors and bearer-token authentication.

Every error a client can get, whatever raised it (a bad parameter, an unknown route, a wrong
method, a missing key, a bug), is answered as ``{"error": {"message", "type", "param", "code"}}``
with a fitting status, so the official ``openai`` client raises its typed exceptions::

    app = FastAPI()
    install_error_handlers(app)
    auth = bearer_auth(lambda token: keys.verify(token) is not None)
    @app.get("/v1/models", dependencies=[Depends(auth)]) ...
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from oikyo.serve.gateway.openai_api import ApiError, error_body

log = logging.getLogger(__name__)

Authenticate = Callable[[str | None], bool]


def error_response(error: ApiError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape (never a bare HTML or FastAPI ``detail`` body)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return error_response(error, {**(headers or {}), **(error.headers or {})} or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        first = (error.errors() or [{}])[0]
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")) or None
        return JSONResponse(error_body(f"Invalid value for '{param}': {first.get('msg', 'invalid')}", param=param,
                                       code="invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        message = {404: f"Unknown route {request.method} {request.url.path}",
                   405: f"Method {request.method} is not allowed on {request.url.path}"}.get(error.status_code,
                                                                                            str(error.detail))
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(error_body(message, kind), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(f"internal error: {error.__class__.__name__}", "server_error"), status_code=500)


def bearer_auth(authenticate: Authenticate, *, blocking: bool = True):
    """A FastAPI dependency: 401 in OpenAI's shape unless ``Authorization: Bearer <token>`` passes.

    ``blocking``: ``authenticate`` does I/O (a database lookup) and runs in the thread pool.
    """
    from oikyo.serve.gateway.keys import bearer_token

    async def dependency(request: Request) -> None:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>' (create one with "
                                "`oikyo keys create`).", code="invalid_api_key")
        ok = await run_in_threadpool(authenticate, token) if blocking else authenticate(token)
        if not ok:
            raise ApiError(401, "Incorrect or revoked API key.", code="invalid_api_key")

    return dependency


def store_keys() -> Authenticate:
    """Authenticate against the API keys in the store (hashed)."""
    from oikyo.serve.gateway import keys

    return lambda token: keys.verify(token) is not None


def shared_token(expected: str) -> Authenticate:
    """Authenticate one secret shared between the router and its replicas (constant-time compare)."""
    return lambda token: hmac.compare_digest((token or "").encode(), expected.encode())
