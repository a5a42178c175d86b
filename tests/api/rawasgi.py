"""A request sent to an ASGI app with its raw path as a server receives it (httpx would normalize '/../')."""

from __future__ import annotations

from urllib.parse import unquote

import anyio


def raw_request(app, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, bytes]:
    """``(status, body)`` of ``method raw_path`` sent straight to ``app`` (no body)."""

    async def call():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
                 "root_path": "", "query_string": b"", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"host", b"testserver"), *headers]}
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    return anyio.run(call)
