"""REST routes: health, login and logout (public), and ``GET /me`` (who is calling).

Login takes the token that `oikyo ui` printed, as JSON ``{"token": ...}`` or a form field ``token``,
and sets the browser's two cookies (see :mod:`oikyo.api.auth`). A form login may add a ``next`` field
(a path on this server) to be redirected there instead of getting JSON back.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from oikyo import __version__
from oikyo.api.auth import CSRF_COOKIE, SESSION_COOKIE, require_auth

router = APIRouter(tags=["system"])
public_router = APIRouter(tags=["system"])

MAX_LOGIN_BODY = 4096  # a token is ~32 characters; refuse anything large before parsing it


@public_router.get("/health")
def health() -> dict:
    """Liveness check (no authentication)."""
    return {"status": "ok", "version": __version__}


async def _login_fields(request: Request) -> dict:
    """The login body (JSON or a URL-encoded form), read with a small cap: this route is public."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/json", "application/x-www-form-urlencoded")):
        raise HTTPException(415, "Send the token as JSON {\"token\": ...} or as the form field 'token'.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            raise HTTPException(413, "The login request is too large.")
    if content_type.startswith("application/json"):
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            raise HTTPException(400, "The body is not valid JSON.") from None
        return fields if isinstance(fields, dict) else {}
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _safe_next(value) -> str | None:
    """A local path to redirect to after a form login (never another site)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")) and "\\" not in value:
        return value
    return None


@public_router.post("/login")
async def login(request: Request):
    """Trade the login token for a browser session: sets ``oikyo_session`` and ``oikyo_csrf``, returns ``{"csrf_token"}``."""
    fields = await _login_fields(request)
    auth = request.app.state.auth
    candidate = fields.get("token")
    if not isinstance(candidate, str) or not auth.token_ok(candidate):
        raise HTTPException(401, "Wrong token: use the one `oikyo ui` printed (also in the workspace file ui-token).")
    session, csrf = auth.new_session()
    target = _safe_next(fields.get("next"))
    response = RedirectResponse(target, status_code=303) if target else JSONResponse({"csrf_token": csrf})
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict", secure=secure, path="/")
    return response


@public_router.post("/logout")
def logout() -> JSONResponse:
    """Forget the browser session (clears both cookies)."""
    response = JSONResponse({"status": "logged out"})
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict")
    return response


@router.get("/me")
def me(how: str = Depends(require_auth)) -> dict:
    """How this request authenticated: ``{"auth": "bearer"}`` or ``{"auth": "session"}``."""
    return {"auth": how}
