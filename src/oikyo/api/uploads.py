"""Receive one uploaded file: streamed to the workspace's ``tmp/`` under a size limit.

``multipart/form-data`` bodies are parsed as they arrive (python-multipart's streaming parser over
``request.stream()``), so nothing is held in memory whole: the file part goes straight to
``<workspace>/tmp/<server-generated name><suffix>`` in chunks, and small text fields (name, format,
...) are collected beside it. The client's filename never becomes a path: only its last component,
sanitized, is kept for display and default names, and its extension (from a short list) becomes the
suffix that format detection reads. Past ``max_bytes`` the upload stops with 413 and the partial
file is removed; any other failure removes it too::

    upload = await receive_upload(request, max_bytes=request.app.state.max_upload_bytes)
    try:
        use(upload.path, upload.fields.get("name"))
    finally:
        upload.discard()
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from oikyo.store import artifacts

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 << 10  # all text fields together
MAX_PARTS = 16
# Extensions the readers understand; anything else gets no suffix (the content is sniffed instead).
KNOWN_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt", ".text", ".md", ".markdown")


class UploadTooLarge(HTTPException):
    def __init__(self, max_bytes: int):
        super().__init__(413, f"The upload is larger than the limit of {max_bytes / 2**20:.0f} MiB "
                              "(start the server with `oikyo ui --max-upload-mb N` to change it).")


@dataclass
class Upload:
    """The received file (``path`` in the workspace's tmp/, or None when no file part came) and fields."""

    path: Path | None = None
    filename: str = ""  # the client's name, sanitized (never used as a path)
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def safe_filename(name: str | None) -> str:
    """The last component of a client filename, with only letters, digits, '.', '_' and '-' kept."""
    if not name:
        return ""
    base = re.split(r"[/\\]", name.replace("\x00", ""))[-1]
    base = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", base)).strip(".-_ ")
    return base[:120]


def safe_suffix(filename: str) -> str:
    """A suffix from :data:`KNOWN_SUFFIXES` (plus ``.gz``) taken from a sanitized filename, or ''."""
    lower = filename.lower()
    gz = ""
    if lower.endswith(".gz"):
        gz, lower = ".gz", lower[:-3]
    for suffix in KNOWN_SUFFIXES:
        if lower.endswith(suffix):
            return suffix + gz
    return gz


def _boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise HTTPException(415, "Send the file as multipart/form-data with a 'file' field.")
    return params[b"boundary"]


class _Receiver:
    """python-multipart callbacks: route each part's bytes to the file or to a text field."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.handle = None
        self.parts = 0
        self.field_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._text = bytearray()

    # header parsing
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise HTTPException(400, f"Too many form parts (at most {MAX_PARTS}).")
        self._headers, self._text = {}, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if not self._is_file:
            return
        if self._name != FILE_FIELD or self.upload.path is not None:
            raise HTTPException(400, f"Send exactly one file, in the '{FILE_FIELD}' field.")
        self.upload.filename = safe_filename(options[b"filename"].decode("utf-8", "replace"))
        # The name on disk is ours: a random name in the workspace's tmp/ with a known suffix.
        self.upload.path = artifacts.temp_path(safe_suffix(self.upload.filename))
        self.handle = open(self.upload.path, "xb")  # noqa: SIM115 - closed in on_part_end or close()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._is_file:
            self.upload.size += n
            if self.upload.size > self.max_bytes:
                raise UploadTooLarge(self.max_bytes)
            self.handle.write(data[start:end])
        else:
            self.field_bytes += n
            if self.field_bytes > MAX_FIELD_BYTES:
                raise HTTPException(413, "The form's text fields are too large.")
            self._text += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file:
            self.handle.close()
            self.handle = None
        elif self._name:
            self.upload.fields[self._name] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


async def receive_upload(request: Request, *, max_bytes: int) -> Upload:
    """Stream the multipart body to disk; raises 413 past ``max_bytes`` (nothing left behind)."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES + 64 * 1024:
        raise UploadTooLarge(max_bytes)  # refuse at once, before reading a byte
    receiver = _Receiver(max_bytes)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end")}
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as error:
        receiver.close()
        receiver.upload.discard()
        if isinstance(error, HTTPException):
            raise
        raise HTTPException(400, f"The multipart body could not be read: {error}") from None
    receiver.close()
    return receiver.upload
