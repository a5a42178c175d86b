"""A JSON array (or a stream of concatenated JSON values) read value by value from a byte stream.

The scanner behind :mod:`oikyo.data.readers`' JSON files: it holds about one chunk of text, not
the file, and refuses a single value longer than its limit (:class:`TooLong`) having read little
more than that. Usage::

    scanner = JsonScanner(stream, chunk_bytes=2 << 20, limit=64 << 20)
    scanner.fill(scanner.chunk)
    if scanner.skip_ws():
        value, text = scanner.value()     # ValueError when the value is broken
"""

from __future__ import annotations

import codecs
import json

_NUMBER_CHARS = frozenset("0123456789.eE+-")


class _NotJson(ValueError):
    """NaN or Infinity: accepted by Python's json module, but not JSON (and not by orjson)."""


def _reject_constant(name: str):
    raise _NotJson(f"{name} is not a valid JSON value")


class TooLong(Exception):
    """A JSON value longer than the record limit."""


class JsonScanner:
    """Reads a JSON array element by element (or a stream of concatenated values) from a text buffer.

    The buffer holds about one chunk: consumed text is dropped when more is read. A value that
    does not fit is retried with twice as much text each time, so a long value costs linear time;
    one longer than ``limit`` characters raises :class:`TooLong` with little more than that read.
    """

    def __init__(self, stream, chunk_bytes: int, limit: int):
        self.stream = stream
        self.chunk = chunk_bytes
        self.limit = limit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self.scanner = json.JSONDecoder(parse_constant=_reject_constant)
        self.buf, self.pos, self.eof = "", 0, False
        self.dropped_lines = 0  # line breaks in the text already dropped from the buffer

    def fill(self, want: int) -> bool:
        """Read about ``want`` more bytes; False at the end of the file."""
        if self.eof:
            return False
        data = self.stream.read(want)
        self.eof = not data
        self.dropped_lines += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + self.decoder.decode(data, final=self.eof)
        self.pos = 0
        return True

    def skip_ws(self) -> bool:
        """Move past whitespace; False when the file ends first."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return True
            if not self.fill(self.chunk):
                return False

    def value(self):
        """Decode the value at the cursor: ``(value, text)``; raises ValueError when it is broken."""
        want = self.chunk
        while True:
            buf, pos = self.buf, self.pos
            try:
                value, end = self.scanner.raw_decode(buf, pos)
                # A number may go on past the buffer's end ("0" of "0.5"): then read more.
                number = type(value) in (int, float)
                if self.eof or end < len(buf) and not (number and buf[end] in _NUMBER_CHARS):
                    if end - pos > self.limit:
                        raise TooLong
                    self.pos = end
                    return value, buf[pos:end]
            except json.JSONDecodeError as exc:
                truncated = exc.msg.startswith("Unterminated string") or exc.pos >= len(buf) - 16
                if self.eof or not truncated:
                    line = self.dropped_lines + buf.count("\n", 0, exc.pos) + 1
                    raise ValueError(f"{exc.msg} (line {line} of the file)") from None
            except RecursionError:
                raise ValueError("the value is nested too deeply") from None
            except _NotJson as exc:
                raise ValueError(str(exc)) from None
            held = len(buf) - pos
            if held > self.limit:
                raise TooLong
            want = min(want * 2, max(self.chunk, self.limit + 1 - held))  # past the limit by one read at most
            self.fill(want)
