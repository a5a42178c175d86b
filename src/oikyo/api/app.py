"""The platform server: the REST API under ``/api/v1`` and the web dashboard, in one FastAPI app.

Routes are thin adapters over the stage packages (data, models, jobs, evaluate, serve): they parse
the request, call the same functions the CLI calls, and shape the answer. No logic lives here.

Error shape for every 4xx: ``{"error": {"type": ..., "message": ...}}`` (plus ``problems`` where a
validation lists several). A user error (:class:`oikyo.errors.OikyoError`) is a 4xx, never a 5xx.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from oikyo import __version__
from oikyo.api.auth import Authenticator, require_auth
from oikyo.errors import OikyoError

API_PREFIX = "/api/v1"


def error_response(status: int, message: str, kind: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


def status_for(error: OikyoError) -> int:
    """404 for 'not found' errors, 409 for conflicts, else 400 (an error class may set ``http_status``)."""
    explicit = getattr(error, "http_status", None)
    if explicit:
        return int(explicit)
    text = str(error).lower()
    if "no such" in text or "not found" in text or "unknown" in text:
        return 404
    return 400


def create_app(token: str) -> FastAPI:
    """The server app; ``token`` is the login token (see :mod:`oikyo.api.auth`)."""
    from oikyo.api.routes import datasets, deployments, evaluations, keys, models, ratings, runs, system
    from oikyo.web import pages

    app = FastAPI(title="oikyo", version=__version__, docs_url=f"{API_PREFIX}/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json", redoc_url=None)
    app.state.auth = Authenticator(token)

    @app.exception_handler(OikyoError)
    async def _user_error(_request: Request, error: OikyoError):
        problems = getattr(error, "problems", None)
        extra = {"problems": problems} if problems else {}
        return error_response(status_for(error), str(error), type(error).__name__, **extra)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException):
        return error_response(error.status_code, str(error.detail), "http_error")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                    for e in error.errors()]
        return error_response(422, "The request is not valid: " + "; ".join(
            f"{p['field']}: {p['message']}" for p in problems), "invalid_request", problems=problems)

    # Public: login, logout, health (system.public_router). Everything else needs auth.
    app.include_router(system.public_router, prefix=API_PREFIX)
    protected = [Depends(require_auth)]
    for module in (system, datasets, models, keys, runs, evaluations, ratings, deployments):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=protected)
    pages.mount(app)  # the dashboard: login page public, other pages redirect to /login without a session
    return app
