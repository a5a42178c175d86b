"""Names and ids that arrive in URLs: refuse anything that could name a path outside the workspace.

Two layers, so a route cannot forget:

- :class:`PathGuard`, an ASGI middleware, refuses (400, before any route runs) every ``/api/v1``
  request whose raw path holds an encoded slash or backslash, a NUL, a backslash, or a ``.``/``..``
  segment, also when percent-encoded more than once (``%2e%2e``, ``%252e%252e``).
- :func:`check_ref` validates one value (a path parameter or a query parameter naming a record)
  the same way; routes call it before they touch anything.

A ref is what the CLI accepts (``name``, ``name@hash-prefix``, an id or id prefix), so letters,
digits and ``. _ - @ :`` are all a ref needs; anything with ``/`` or ``\\`` (so no absolute path),
NUL or a control character, ``..``, or that is ``.``, is refused, in any percent-encoding.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from fastapi import HTTPException

MAX_REF = 200
_UNQUOTE_ROUNDS = 4  # %25 can hide one encoding inside another; decode a few times
_ENCODED_BAD = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def _decoded_forms(value: str) -> list[str]:
    forms = [value]
    for _ in range(_UNQUOTE_ROUNDS):
        nxt = unquote(forms[-1])
        if nxt == forms[-1]:
            break
        forms.append(nxt)
    return forms


def ref_problem(value: str) -> str | None:
    """Why ``value`` is not a safe ref, or None when it is."""
    if not value or len(value) > MAX_REF:
        return f"must be 1 to {MAX_REF} characters"
    for form in _decoded_forms(value):
        if "/" in form or "\\" in form:
            return "must not contain '/' or '\\' (it names a record, not a path)"
        if "\x00" in form or any(ord(c) < 32 for c in form):
            return "must not contain NUL or control characters"
        if form.strip() == "." or ".." in form:
            return "must not be '.' or contain '..'"
    return None


def check_ref(value: str | None, what: str = "id") -> str | None:
    """``value`` itself when it is a safe ref (None passes through); else a 400 that names ``what``."""
    if value is None:
        return None
    problem = ref_problem(value)
    if problem:
        raise HTTPException(400, f"Invalid {what} {value[:80]!r}: {problem}.")
    return value


def path_problem(raw_path: str) -> str | None:
    """Why a raw request path (still percent-encoded) must be refused, or None."""
    if "\\" in raw_path or "\x00" in raw_path:
        return "a backslash or NUL in the path"
    if _ENCODED_BAD.search(raw_path):
        return "an encoded '/', '\\' or NUL in the path"
    for segment in raw_path.split("/"):
        for form in _decoded_forms(segment):
            if form in (".", ".."):
                return "a '.' or '..' segment in the path"
            if "/" in form or "\\" in form or "\x00" in form:
                return "an encoded '/', '\\' or NUL in the path"
    return None


class PathGuard:
    """ASGI middleware: 400 with the error shape for unsafe paths under ``prefix``."""

    def __init__(self, app, prefix: str):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            raw_text = raw.decode("latin-1")
            path = scope.get("path", "")
            if path.startswith(self.prefix) or raw_text.startswith(self.prefix):
                problem = path_problem(raw_text) or ("a NUL in the path" if "\x00" in path else None)
                if problem and scope["type"] == "http":
                    body = json.dumps({"error": {"type": "invalid_path", "message": f"Refused: {problem}."}}).encode()
                    await send({"type": "http.response.start", "status": 400,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
                if problem:
                    await send({"type": "websocket.close", "code": 1008})
                    return
        await self.app(scope, receive, send)
