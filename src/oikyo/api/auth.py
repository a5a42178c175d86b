"""Who may call the platform server: one login token, browser sessions, and CSRF protection.

`oikyo ui` prints a login token (kept in the workspace file ``ui-token``, mode 0600, so a restart
keeps it; ``oikyo ui --new-token`` replaces it). Two ways in:

- API clients send ``Authorization: Bearer <token>`` on every request. No cookie, so no CSRF check.
- Browsers POST the token to ``/api/v1/login`` once and get two cookies: ``oikyo_session`` (HttpOnly,
  SameSite=Strict) and ``oikyo_csrf`` (readable by the page's JavaScript). Every unsafe request
  (POST, PUT, PATCH, DELETE) made with the session cookie must echo the CSRF value in the
  ``X-CSRF-Token`` header or a ``csrf_token`` form field (double submit, tied to the session by HMAC).

Sessions are stateless: the session cookie is ``<random id>.<HMAC(secret, id)>`` where the secret
is derived from the token, so replacing the token logs every browser out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request

from oikyo import workspace

SESSION_COOKIE = "oikyo_session"
CSRF_COOKIE = "oikyo_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_path() -> Path:
    return workspace.home() / "ui-token"


def load_or_create_token(new: bool = False) -> str:
    """The server's login token: read from the workspace, or created (0600) on first use or when ``new``."""
    path = token_path()
    if not new and path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (``hmac.compare_digest`` refuses such str)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


@dataclass(frozen=True)
class Authenticator:
    """Checks credentials against one login token."""

    token: str

    @property
    def _secret(self) -> bytes:
        return hashlib.sha256(b"oikyo-ui-session:" + self.token.encode()).digest()

    def _sign(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, candidate: str | None) -> bool:
        return bool(candidate) and _same(candidate, self.token)

    def new_session(self) -> tuple[str, str]:
        """A (session cookie, CSRF value) pair for a browser that just logged in."""
        session_id = secrets.token_urlsafe(18)
        return f"{session_id}.{self._sign(session_id)}", self.csrf_for(session_id)

    def session_id(self, cookie: str | None) -> str | None:
        """The session id in a valid session cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        session_id, signature = cookie.rsplit(".", 1)
        return session_id if _same(signature, self._sign(session_id)) else None

    def csrf_for(self, session_id: str) -> str:
        return self._sign("csrf:" + session_id)

    async def check(self, request: Request) -> str:
        """How the request authenticated ("bearer" or "session"); raises 401/403 otherwise."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            if self.token_ok(header[7:].strip()):
                return "bearer"
            raise HTTPException(401, "Invalid token.")
        session_id = self.session_id(request.cookies.get(SESSION_COOKIE))
        if session_id is None:
            raise HTTPException(401, "Log in first: POST the token printed by `oikyo ui` to /api/v1/login, "
                                     "or send 'Authorization: Bearer <token>'.")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER)
            if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                sent = (await request.form()).get("csrf_token")
            if not sent or not _same(str(sent), self.csrf_for(session_id)):
                raise HTTPException(403, f"Missing or wrong CSRF token (send the {CSRF_COOKIE} cookie's value "
                                         f"in the {CSRF_HEADER} header).")
        return "session"


async def require_auth(request: Request) -> str:
    """FastAPI dependency: every route but login and health uses it."""
    return await request.app.state.auth.check(request)


class AuthGate:
    """ASGI middleware: refuse (401) a request under ``prefix`` with neither a valid bearer token nor
    a valid session cookie before anything reads its body.

    FastAPI parses a route's JSON or form body before running its dependencies, so without this an
    anonymous client could make the server read (and validate) a large body before being turned
    away. :func:`require_auth` still runs on every route: it adds the CSRF check for sessions.
    """

    def __init__(self, app, auth: Authenticator, prefix: str, public: frozenset[str]):
        self.app, self.auth, self.prefix, self.public = app, auth, prefix, public

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(self.prefix) and scope["path"] not in self.public:
            from starlette.requests import HTTPConnection
            from starlette.responses import JSONResponse

            connection = HTTPConnection(scope)
            header = connection.headers.get("authorization", "")
            status, message = 0, ""
            if header.lower().startswith("bearer "):
                if not self.auth.token_ok(header[7:].strip()):
                    status, message = 401, "Invalid token."
            else:
                session_id = self.auth.session_id(connection.cookies.get(SESSION_COOKIE))
                if session_id is None:
                    status, message = 401, ("Log in first: POST the token printed by `oikyo ui` to /api/v1/login, "
                                            "or send 'Authorization: Bearer <token>'.")
                elif scope["method"] not in SAFE_METHODS and not self._csrf_deferred(connection, session_id):
                    status, message = 403, (f"Missing or wrong CSRF token (send the {CSRF_COOKIE} cookie's value "
                                            f"in the {CSRF_HEADER} header).")
            if status:
                response = JSONResponse({"error": {"type": "http_error", "message": message}}, status_code=status)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _csrf_deferred(self, connection, session_id: str) -> bool:
        """True when the CSRF header is right, or absent from a URL-encoded form (whose ``csrf_token``
        field :func:`require_auth` checks once the form is read)."""
        sent = connection.headers.get(CSRF_HEADER)
        if sent is None:
            return connection.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        return _same(sent, self.auth.csrf_for(session_id))
