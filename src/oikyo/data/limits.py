"""Safety limits on what an import reads: the longest record, and how far a gzip file may expand.

A hostile or broken file must be refused with a clear message, never read whole into memory:

- ``OIKYO_MAX_RECORD_BYTES`` (default 64 MiB): the longest JSONL/CSV/TSV line, plain-text document or
  JSON record. A longer one stops the import (``too_long``, with its line or record) as soon as the
  reader has seen that much of it, so memory stays bounded whatever the file holds (a 1 GB line).
- ``OIKYO_MAX_GZIP_RATIO`` (default 100, the bound Apache POI puts on zip files): a gzip stream may
  expand to at most this many times the compressed bytes read so far. Once past :data:`GZIP_FLOOR`
  of output, more stops the import as a likely gzip bomb (``unreadable_file``), so a bomb costs
  the same small amount of work whatever it would expand to; real datasets compress 3-20x.

Usage (inside :mod:`oikyo.data.readers`)::

    stream = BoundedGzip(raw)                     # raises LimitExceeded past the expansion limit
    limit = max_record_bytes()
"""

from __future__ import annotations

import gzip
import os

RECORD_ENV = "OIKYO_MAX_RECORD_BYTES"
GZIP_RATIO_ENV = "OIKYO_MAX_GZIP_RATIO"
DEFAULT_MAX_RECORD_BYTES = 64 << 20
DEFAULT_MAX_GZIP_RATIO = 100.0
GZIP_FLOOR = 16 << 20  # decompressed bytes that never count as a bomb, whatever the ratio


class LimitExceeded(Exception):
    """The file goes past a safety limit; ``line`` or ``index`` says where, when known."""

    def __init__(self, message: str, error: str = "too_long", line: int | None = None, index: int | None = None):
        super().__init__(message)
        self.error, self.line, self.index = error, line, index


def _env_number(name: str, default: float, kind=int):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive number, not {raw!r}")
    return value


def max_record_bytes() -> int:
    """The longest line, document or JSON record an import reads (``OIKYO_MAX_RECORD_BYTES``)."""
    return _env_number(RECORD_ENV, DEFAULT_MAX_RECORD_BYTES)


def max_gzip_ratio() -> float:
    """How many times its compressed size a gzip file may expand to (``OIKYO_MAX_GZIP_RATIO``)."""
    return _env_number(GZIP_RATIO_ENV, DEFAULT_MAX_GZIP_RATIO, float)


def size_text(n: float) -> str:
    """``64 MiB``, ``1.5 GiB``, ``900 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def record_too_long(what: str, limit: int) -> str:
    """The message for a record over the limit: ``what`` is "line 12", "record 3" or similar."""
    return (f"{what} is longer than {size_text(limit)}, the limit for one record; split it, or raise "
            f"{RECORD_ENV} if it is meant to be this long")


class _Counted:
    """A raw file wrapper that counts the bytes read through it."""

    def __init__(self, raw):
        self.raw, self.done = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.done += len(data)
        return data


class BoundedGzip:
    """A gzip stream that raises :class:`LimitExceeded` once it expands past the allowed ratio."""

    def __init__(self, raw, ratio: float | None = None):
        self.raw = _Counted(raw)
        self.stream = gzip.GzipFile(fileobj=self.raw)
        self.ratio = max_gzip_ratio() if ratio is None else ratio
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = GZIP_FLOOR  # one bounded piece at a time
        data = self.stream.read(n)
        self.done += len(data)
        if self.done > GZIP_FLOOR and self.done > self.ratio * self.raw.done:
            raise LimitExceeded(
                f"the gzip file expands more than {self.ratio:g} times ({size_text(self.raw.done)} became over "
                f"{size_text(self.done)}): refused as a likely gzip bomb; decompress it yourself and import "
                f"the plain file, or raise {GZIP_RATIO_ENV}",
                error="unreadable_file",
            )
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.stream.close()
