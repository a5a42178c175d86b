"""The platform server: the REST API under ``/api/v1`` and the web dashboard, in one FastAPI app.

Routes are thin adapters over the stage packages (data, models, jobs, evaluate, serve): they parse
the request, call the same functions the CLI calls, and shape the answer. No logic lives here.

Error shape for every 4xx: ``{"error": {"type": ..., "message": ...}}`` (plus ``problems`` where a
validation lists several). A user error (:class:`oikyo.errors.OikyoError`) is a 4xx, never a 5xx.
"""

from __future__ import annotations

import contextlib
import re

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from oikyo import __version__
from oikyo.api.auth import AuthGate, Authenticator, require_auth
from oikyo.api.refs import PathGuard
from oikyo.errors import OikyoError
from oikyo.store import disk

API_PREFIX = "/api/v1"
# alerts/alertmanager checks its own credentials (the token or an API key: routes/alerts.py).
PUBLIC_PATHS = frozenset(f"{API_PREFIX}/{name}" for name in ("health", "login", "logout", "alerts/alertmanager"))
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB; `oikyo ui --max-upload-mb` changes it


def error_response(status: int, message: str, kind: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status, headers=headers)


def docs_page(spec: dict) -> str:
    """A self-contained HTML list of the API's operations (no CDN: the server works offline)."""
    from html import escape

    rows = []
    for path, operations in sorted(spec.get("paths", {}).items()):
        for method, op in operations.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", []))
            body = "JSON body" if "requestBody" in op else ""
            rows.append(f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code></td>"
                        f"<td>{escape(op.get('summary', ''))}<br><small>{escape(op.get('description', '') or '')}"
                        f"</small></td><td>{escape(', '.join(x for x in (params, body) if x))}</td></tr>")
    return ("<!doctype html><html><head><meta charset=utf-8><title>oikyo REST API</title><style>"
            "body{font:14px system-ui,sans-serif;margin:2em}td{border-top:1px solid #ddd;padding:.3em .6em;"
            "vertical-align:top}small{color:#555;white-space:pre-line}</style></head><body>"
            f"<h1>oikyo REST API {escape(spec.get('info', {}).get('version', ''))}</h1>"
            f"<p>The machine-readable spec: <a href='{API_PREFIX}/openapi.json'>{API_PREFIX}/openapi.json</a>. "
            "Send <code>Authorization: Bearer &lt;token&gt;</code> (the token <code>oikyo ui</code> printed).</p>"
            "<table><tr><th>method</th><th>path</th><th>what it does</th><th>parameters</th></tr>"
            + "".join(rows) + "</table></body></html>")


def status_for(error: OikyoError) -> int:
    """404 for 'not found' errors, 409 for conflicts, else 400 (an error class may set ``http_status``)."""
    explicit = getattr(error, "http_status", None)
    if explicit:
        return int(explicit)
    text = str(error).lower()
    if "no such" in text or "not found" in text or "unknown" in text or re.match(r"no \S.* match", text):
        return 404
    return 400


def create_app(token: str, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, loop: bool = False) -> FastAPI:
    """The server app; ``token`` is the login token (see :mod:`oikyo.api.auth`).

    ``max_upload_bytes`` caps one uploaded file (larger uploads get 413 and leave nothing behind).
    ``loop``: run the continuous-training controller in a background thread while the app runs
    (:mod:`oikyo.api.background`; ``oikyo ui`` asks for it unless ``--no-loop`` or ``OIKYO_LOOP=0``).
    """
    from oikyo.api.routes import (alerts, datasets, deployments, evaluations, keys, loop as loop_routes, models,
                                  ratings, runs, studies, system)
    from oikyo.web import pages

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from oikyo.api.background import LoopThread

        app.state.loop_runner = LoopThread.start() if loop else None
        try:
            yield
        finally:
            if app.state.loop_runner is not None:
                app.state.loop_runner.stop()

    # The spec and the docs page are served below, behind the same authentication as the API.
    app = FastAPI(title="oikyo", version=__version__, docs_url=None, openapi_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.auth = Authenticator(token)
    app.state.loop = bool(loop)
    app.state.loop_runner = None
    app.state.max_upload_bytes = int(max_upload_bytes)
    # Outermost first: refuse '..', encoded slashes, backslashes and NUL in any /api/v1 path, then
    # anonymous callers, both before routing (and before any body is read).
    app.add_middleware(AuthGate, auth=app.state.auth, prefix=API_PREFIX, public=PUBLIC_PATHS)
    app.add_middleware(PathGuard, prefix=API_PREFIX)

    @app.exception_handler(OikyoError)
    async def _user_error(_request: Request, error: OikyoError):
        problems = getattr(error, "problems", None)
        extra = {"problems": problems} if problems else {}
        return error_response(status_for(error), str(error), type(error).__name__, **extra)

    @app.exception_handler(OSError)
    @app.exception_handler(OperationalError)
    async def _disk_error(_request: Request, error: Exception):
        """A full or read-only disk (the writers leave the earlier state intact): 507 saying so."""
        message = disk.describe(error, "nothing was stored")
        if message is None:
            raise error  # not a disk condition: the server error it is (logged with its traceback)
        return error_response(disk.DiskError.http_status, message, "DiskError")

    @app.exception_handler(StarletteHTTPException)  # also FastAPI's HTTPException and routing 404/405
    async def _http_error(_request: Request, error: StarletteHTTPException):
        return error_response(error.status_code, str(error.detail), "http_error", headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                    for e in error.errors()]
        return error_response(422, "The request is not valid: " + "; ".join(
            f"{p['field']}: {p['message']}" for p in problems), "invalid_request", problems=problems)

    # Public: login, logout, health (system.public_router). Everything else needs auth.
    app.include_router(system.public_router, prefix=API_PREFIX)
    app.include_router(alerts.webhook_router, prefix=API_PREFIX)
    protected = [Depends(require_auth)]
    for module in (system, datasets, models, keys, runs, evaluations, ratings, deployments, studies, alerts,
                   loop_routes):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=protected)

    @app.get(f"{API_PREFIX}/openapi.json", include_in_schema=False, dependencies=protected)
    def _openapi() -> dict:
        return app.openapi()

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False, dependencies=protected, response_class=HTMLResponse)
    def _docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    pages.mount(app)  # the dashboard: login page public, other pages redirect to /login without a session
    return app
