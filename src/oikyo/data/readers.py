"""Streaming readers for dataset files: JSONL, JSON (array or a stream of values), CSV, TSV, Parquet,
and plain text (``.txt``, ``.md``).

Any of them may be gzip-compressed (``.gz`` or the gzip magic bytes). The file type comes from
the extension, else from the content. Nothing reads a whole file into memory: a
:class:`Source` turns the file into *tasks*, small picklable tuples that the ingest engine hands to
worker processes (or handles in-process)::

    ("lines", data)                 # JSONL lines: bytes ending on a line break (or the file's end)
    ("range", path, start, end)     # the same, as a byte range the worker reads itself
    ("records", items)              # items: [(line, index, value, problem), ...]

Line tasks are numbered by whoever consumes them, in order (counting lines is the workers' job,
not the reader's, so the reading process stays light).

``problem`` is ``None`` or ``(error, field, message)`` for a record the reader already knows is
bad (invalid UTF-8, a duplicate key, a broken CSV line). While producing tasks the source hashes
the file's raw bytes (:meth:`Source.sha256`) and counts progress (:attr:`Source.bytes_done`).

A byte-order mark at the start and CRLF line endings are accepted silently. Problems that stop
the reading (a corrupt gzip stream, a broken JSON array, a record or a gzip expansion past the
safety limits of :mod:`oikyo.data.limits`) land in :attr:`Source.problems`.

Plain text is a corpus of documents, each read as the record ``{"text": ...}`` numbered by its first
line, in one of two layouts (:data:`TEXT_UNITS`): ``line`` (one document per line) or ``block``
(documents are runs of non-blank lines separated by blank lines), chosen from the first MiB by
:func:`oikyo.data.plaintext.detect_text_unit` unless the caller gives the unit. Nothing in a
document is changed: it is its lines exactly as written, inner line breaks included, less the line
break that ends its last line. Blank lines (empty, or only whitespace) belong to no document; they
are counted (:attr:`Source.blank_lines`), not reported.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import json
import re
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import orjson

from oikyo.data import limits
from oikyo.data.jsonscan import JsonScanner, TooLong
from oikyo.data.limits import LimitExceeded, record_too_long
from oikyo.data.plaintext import (
    NUL_RUN,
    TEXT_UNITS,
    detect_text_unit,
    is_blank,
    json_lines_in_disguise,
    nul_run_problem,
    text_document,
)

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BOM = b"\xef\xbb\xbf"
FILETYPES = ("jsonl", "json", "csv", "tsv", "parquet", "text")
EXTENSIONS = {
    "jsonl": "jsonl", "ndjson": "jsonl", "jsonlines": "jsonl", "json": "json",
    "csv": "csv", "tsv": "tsv", "tab": "tsv", "parquet": "parquet", "pq": "parquet",
    "txt": "text", "text": "text", "md": "text", "markdown": "text",
}  # fmt: skip
CHUNK_BYTES = 2 << 20  # bytes of input per task
RECORDS_PER_TASK = 4096
SNIFF_BYTES = 1 << 20
# Errors a damaged file raises while being read (gzip, zlib, the OS).
READ_ERRORS = (OSError, EOFError, zlib.error)

# An upper bound on the number of object keys in JSON text: every key is a string followed by a
# colon. Equality with the number of keys actually parsed proves there was no duplicate key.
KEYISH = re.compile(rb'"\s*:')
_KEYISH_STR = re.compile(r'"\s*:')

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long texts are normal in datasets


class ReadError(Exception):
    """The file cannot be read at all (missing, unreadable, not a known file type)."""


# ---------------------------------------------------------------------------- JSON values


def count_keys(value) -> int:
    """How many object keys a parsed JSON value holds, at any depth (iterative: no recursion limit)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            total += len(item)
            children = item.values()
        else:
            children = item
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append(child)
    return total


def _first_duplicate(text) -> str | None:
    """The path of the first duplicate key in JSON text (re-parsed with object_pairs_hook)."""

    class Dup(dict):
        key = ""

    def hook(pairs):
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen = set()
        dup = Dup(obj)
        dup.key = next(k for k, _ in pairs if k in seen or seen.add(k))
        return dup

    try:
        value = json.loads(text, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None
    stack = [(value, "")]
    while stack:
        item, path = stack.pop(0)
        if isinstance(item, Dup):
            return f"{path}.{item.key}" if path else item.key
        if isinstance(item, dict):
            stack += [(v, f"{path}.{k}" if path else k) for k, v in item.items() if isinstance(v, (dict, list))]
        elif isinstance(item, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(item) if isinstance(v, (dict, list))]
    return None


def duplicate_key(text, value) -> tuple[str, str, str] | None:
    """A duplicate_key problem for JSON ``text`` that parsed to ``value``, or None.

    Fast path: a count of colons (then of ``"\\s*:``) that equals the parsed key count proves
    there is no duplicate; only otherwise is the text parsed again to find one.
    """
    if type(value) is not dict:
        return None  # not an object: reported as not_object instead
    keys = count_keys(value)
    if isinstance(text, bytes):
        if text.count(b":") == keys or len(KEYISH.findall(text)) == keys:
            return None
    elif text.count(":") == keys or len(_KEYISH_STR.findall(text)) == keys:
        return None
    path = _first_duplicate(text)
    if path is None:
        return None
    return ("duplicate_key", path, f"key {path.rsplit('.', 1)[-1]!r} appears twice in one object; keep only one")


def parse_line(line: bytes):
    """Parse one JSONL line: ``(value, None)`` or ``(None, (error, field, message))``."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return None, ("invalid_utf8", None, f"line is not valid UTF-8 (byte {bad.start + 1}); re-save it as UTF-8")
        return None, ("invalid_json", None, f"line is not valid JSON: {exc.msg} (at character {exc.pos + 1})")
    return value, duplicate_key(line, value)


# ---------------------------------------------------------------------------- file types


class _HashingReader:
    """A raw file wrapper that hashes and counts every byte read through it."""

    def __init__(self, path: Path):
        self.file = open(path, "rb")  # noqa: SIM115 (closed by Source.close)
        self.hash = hashlib.sha256()
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        self.hash.update(data)
        self.done += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> str:
        """Hash the rest of the file; return the hex digest of all of it."""
        while self.read(CHUNK_BYTES):
            pass
        return self.hash.hexdigest()


def _head(path: Path, gzipped: bool) -> bytes:
    """The first bytes of the (decompressed) content."""
    with open(path, "rb") as raw:
        if not gzipped:
            return raw.read(SNIFF_BYTES)
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                return stream.read(SNIFF_BYTES)
        except READ_ERRORS as exc:
            raise ReadError(f"the file looks gzip-compressed but cannot be decompressed: {exc}") from None


def _json_kind(head: bytes, ext: str) -> str:
    """``jsonl`` (one value per line) or ``json`` (an array, or values spread over lines)."""
    body = head.removeprefix(BOM).lstrip()
    first_line = body.split(b"\n", 1)[0]
    if body[:1] == b"[":
        # A .jsonl file is JSON lines unless it plainly opens an array on a line of its own.
        return "jsonl" if ext == "jsonl" and first_line.strip() != b"[" else "json"
    if body[:1] == b"{" and ext != "jsonl":
        try:
            orjson.loads(first_line)
        except orjson.JSONDecodeError:
            return "json"  # a pretty-printed object: read it as a stream of values
        return "jsonl" if b"\n" in body or len(head) < SNIFF_BYTES else "json"
    return "json" if ext == "json" else "jsonl"


def _utf16_without_bom(head: bytes) -> bool:
    """Whether the content looks like UTF-16 text with no byte-order mark: mostly-ASCII text in UTF-16
    has a NUL as every other byte, which UTF-8 text never has."""
    sample = head[:4096]
    if len(sample) < 16 or b"\x00" not in sample:
        return False
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    return max(even, odd) >= 0.4 * half and min(even, odd) <= 0.05 * half


def sniff(path: Path) -> tuple[str, bool]:
    """``(filetype, gzipped)`` from the extension, else the content; raises ReadError."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(4)
    except OSError as exc:
        raise ReadError(f"cannot open the file: {exc.strerror or exc}") from None
    gzipped = magic[:2] == GZIP_MAGIC
    name = path.name.lower()
    for suffix in (".gz", ".gzip"):
        name = name.removesuffix(suffix)
    ext = EXTENSIONS.get(name.rsplit(".", 1)[-1]) if "." in name else None
    head = _head(path, gzipped)
    if head[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        raise ReadError("the file is UTF-32 text; save it as UTF-8 and import it again")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or _utf16_without_bom(head):
        raise ReadError("the file is UTF-16 text; save it as UTF-8 and import it again")
    if ext in ("csv", "tsv", "parquet", "text"):
        return ext, gzipped
    if head.startswith(PARQUET_MAGIC):
        return "parquet", gzipped
    text = head.removeprefix(BOM).lstrip()
    if ext in ("json", "jsonl") or text[:1] in (b"[", b"{") or not text:
        return _json_kind(head, ext or ""), gzipped
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        # An incremental decode tolerates a character cut at the end of the sniffed bytes.
        first = codecs.getincrementaldecoder("utf-8")().decode(text.split(b"\n", 1)[0])
    except UnicodeDecodeError:
        raise ReadError("not a dataset file oikyo can read (expected JSONL, JSON, CSV, TSV, Parquet, "
                        "or plain text named .txt or .md)") from None
    return ("tsv" if first.count("\t") > first.count(",") else "csv"), gzipped


# ---------------------------------------------------------------------------- the source


class Source:
    """One input file, read once from start to end as a stream of tasks."""

    def __init__(self, path: str | Path, text_unit: str | None = None):
        self.path = Path(path)
        try:
            self.max_record = limits.max_record_bytes()
        except ValueError as exc:
            raise ReadError(str(exc)) from None
        self.filetype, self.gzipped = sniff(self.path)
        self.size = self.path.stat().st_size
        # Plain text only: the layout (TEXT_UNITS), whether it was detected, and blank lines seen.
        self.text_unit: str | None = None
        self.text_unit_detected = False
        self.blank_lines = 0
        self._text_layout(text_unit)
        # Problems that stopped the reading: (line, index, error, field, message).
        self.problems: list[tuple] = []
        self.fatal = False  # the file could not be read to its end
        self._raw: _HashingReader | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._done = 0

    @property
    def bytes_done(self) -> int:
        """Raw bytes read so far (for progress)."""
        if self.filetype == "parquet":
            return self._done
        return self._raw.done if self._raw else 0

    def _stream(self):
        self._raw = _HashingReader(self.path)
        return limits.BoundedGzip(self._raw) if self.gzipped else self._raw

    def sha256(self) -> str:
        """The sha256 of the file's bytes (reads whatever the tasks did not)."""
        if self._raw is None:
            self._raw = _HashingReader(self.path)
        return self._raw.drain()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.file.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _text_layout(self, text_unit: str | None) -> None:
        """Settle the plain-text layout: the one given, else the detected one; raises ReadError."""
        if text_unit is not None and text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit must be one of {', '.join(TEXT_UNITS)}, not {text_unit!r}")
        if self.filetype != "text":
            if text_unit is not None:
                raise ReadError(f"a text unit applies to plain-text files (.txt, .md) only; this file reads as "
                                f"{self.filetype}")
            return
        if text_unit is not None:
            self.text_unit = text_unit
            return
        head = _head(self.path, self.gzipped)
        whole = len(head) < SNIFF_BYTES
        if json_lines_in_disguise(head, whole):
            # Reading JSON records as prose would be silently wrong; so would guessing they are records.
            raise ReadError(
                "every line of this text file is a JSON object: rename it to .jsonl to import the records, "
                "or pass --text-unit line to import each line as plain text"
            )
        self.text_unit, self.text_unit_detected = detect_text_unit(head, whole), True

    def _fail(self, message: str, error: str = "unreadable_file") -> None:
        self.problems.append((None, None, error, None, message))
        self.fatal = True

    def tasks(self, *, by_range: bool = False, chunk_bytes: int | None = None):
        """Yield the tasks that cover the file, in order (see the module docstring)."""
        chunk_bytes = chunk_bytes or CHUNK_BYTES
        readers = {"jsonl": self._lines, "json": self._json, "csv": self._csv, "tsv": self._csv,
                   "text": self._text}
        try:
            if self.filetype == "parquet":
                yield from self._parquet()
            elif self.filetype == "jsonl" and by_range and not self.gzipped:
                yield from self._ranges(chunk_bytes)
            else:
                yield from readers[self.filetype](self._stream(), chunk_bytes)
        except READ_ERRORS as exc:
            self._fail(f"the file could not be read to its end: {exc}")
        except LimitExceeded as exc:
            self.problems.append((exc.line, exc.index, exc.error, None, str(exc)))
            self.fatal = True

    def _line_at(self, offset: int) -> int:
        """The number of the line that starts at byte ``offset`` of the content (read again: failures only)."""
        count, left = 0, offset
        with open(self.path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if self.gzipped else raw
            while left > 0 and (data := stream.read(min(CHUNK_BYTES, left))):
                count += data.count(b"\n")
                left -= len(data)
        return count + 1

    def _too_long(self, offset: int) -> LimitExceeded:
        """The error for the line starting at byte ``offset``, found to be over the record limit."""
        line = self._line_at(offset)
        return LimitExceeded(record_too_long(f"line {line}", self.max_record), line=line)

    # JSONL ---------------------------------------------------------------

    def _lines(self, stream, chunk_bytes: int):
        # pending: bytes of the unfinished line held in parts; line_start: where that line starts.
        limit = self.max_record
        parts, pending, line_start, start = [], 0, 0, True
        while data := stream.read(min(chunk_bytes, limit)):
            if start:
                line_start, start = len(data), False
                data = data.removeprefix(BOM)
                line_start -= len(data)
            cut = data.rfind(b"\n")
            if cut < 0:
                parts.append(data)
                pending += len(data)
                if pending > limit:  # refused before any more of it is read
                    raise self._too_long(line_start)
                continue
            if pending and pending + data.find(b"\n") > limit:
                raise self._too_long(line_start)
            parts.append(data[: cut + 1])
            chunk = b"".join(parts)
            parts = [data[cut + 1 :]]
            pending, line_start = len(parts[0]), line_start + len(chunk)
            yield ("lines", chunk)
        tail = b"".join(parts)
        if tail:
            yield ("lines", tail)

    def _ranges(self, chunk_bytes: int):
        """JSONL as byte ranges: workers read their lines themselves; this only finds line breaks.

        The bytes are read into one reused buffer (to hash them and find the breaks), so the
        reading process allocates nothing per chunk.
        """
        raw = self._raw = _HashingReader(self.path)
        limit = self.max_record
        buffer = bytearray(min(chunk_bytes, limit))
        view = memoryview(buffer)
        with open(self.path, "rb") as head:
            start = len(BOM) if head.read(len(BOM)) == BOM else 0
        offset = 0
        while n := raw.file.readinto(buffer):
            raw.hash.update(view[:n])
            raw.done += n
            cut = buffer.rfind(b"\n", 0, n)
            if cut >= 0:
                if offset + buffer.find(b"\n", 0, n) - start > limit:
                    raise self._too_long(start)
                end = offset + cut + 1
                yield ("range", str(self.path), start, end)
                start = end
            elif offset + n - start > limit:  # no line break yet: refused before more of it is read
                raise self._too_long(start)
            offset += n
        if offset > start:
            yield ("range", str(self.path), start, offset)

    # JSON ----------------------------------------------------------------

    def _json(self, stream, chunk_bytes: int):
        """A JSON array (element by element) or a stream of concatenated JSON values."""
        items, size = [], 0
        for item in _json_values(stream, min(chunk_bytes, self.max_record), self):
            items.append(item)
            size += 1
            if size >= RECORDS_PER_TASK:
                yield ("records", items)
                items, size = [], 0
        if items:
            yield ("records", items)

    # CSV / TSV -----------------------------------------------------------

    def _csv(self, stream, chunk_bytes: int):
        bad_lines: dict[int, str] = {}  # line number -> what is wrong with its bytes

        def text_lines():
            for number, line in enumerate(_iter_lines(stream, chunk_bytes, self.max_record), start=1):
                if number == 1:
                    line = line.removeprefix(BOM)
                if NUL_RUN in line:
                    bad_lines[number] = nul_run_problem(number)
                try:
                    yield line.decode("utf-8")
                except UnicodeDecodeError:
                    bad_lines[number] = f"line {number} is not valid UTF-8; re-save the file as UTF-8"
                    yield line.decode("utf-8", errors="replace")

        csv.field_size_limit(min(sys.maxsize, self.max_record))  # a quote left open must not swallow the file
        # strict: a quoted field the file never closes is an error, not the rest of the file as one value.
        reader = csv.reader(text_lines(), delimiter="\t" if self.filetype == "tsv" else ",", strict=True)
        header, items, last = None, [], 0
        try:
            for row in reader:
                line, last = last + 1, reader.line_num
                if not row or row == [""] and header is not None:
                    continue
                if header is None:
                    header = [name.strip() for name in row]
                    dups = sorted({name for name in header if header.count(name) > 1})
                    continue
                items.append((line, None, *_csv_record(header, dups, row, bad_lines, line, last)))
                if len(items) >= RECORDS_PER_TASK:
                    yield ("records", items)
                    items = []
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                self._fail(f"line {last + 1}: a quoted field is never closed (the file ends inside it); "
                           "add the closing quote")
                return
            if "field limit" not in str(exc):
                self._fail(f"line {reader.line_num}: the file is not valid CSV: {exc}")
                return
            message = record_too_long(f"a field of the row at line {last + 1}", self.max_record)
            raise LimitExceeded(f"{message} (is a closing quote missing?)", line=last + 1) from None
        if items:
            yield ("records", items)

    # Plain text ----------------------------------------------------------

    def _text(self, stream, chunk_bytes: int):
        """Documents as ``{"text"}`` records, numbered by their first line, in tasks of bounded size."""
        block = self.text_unit == "block"
        items, size = [], 0
        lines, first, held = [], 0, 0  # the current document's lines (with their breaks), first line, bytes
        for number, line in enumerate(_iter_lines(stream, chunk_bytes, self.max_record), start=1):
            if number == 1:
                line = line.removeprefix(BOM)
            blank = is_blank(line)
            if not blank:
                if not lines:
                    first, held = number, 0
                lines.append(line)
                held += len(line)
                if held > self.max_record:
                    what = f"the document starting at line {first}"
                    raise LimitExceeded(record_too_long(what, self.max_record), line=first)
            else:
                self.blank_lines += 1
            if lines and (blank or not block):
                items.append(text_document(lines, first))
                size += sum(map(len, lines))
                lines = []
                if len(items) >= RECORDS_PER_TASK or size >= chunk_bytes:
                    yield ("records", items)
                    items, size = [], 0
        if lines:
            items.append(text_document(lines, first))
        if items:
            yield ("records", items)

    # Parquet -------------------------------------------------------------

    def _parquet_path(self) -> Path:
        if not self.gzipped:
            return self.path
        self._tmp = tempfile.TemporaryDirectory(prefix="oikyo-import-")
        target = Path(self._tmp.name) / "data.parquet"
        with open(self.path, "rb") as raw, open(target, "wb") as out:
            shutil.copyfileobj(limits.BoundedGzip(raw), out, CHUNK_BYTES)
        return target

    def _parquet(self):
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self._parquet_path())
            names = parquet.schema_arrow.names
            dups = sorted({name for name in names if names.count(name) > 1})
            index = 0
            total = max(parquet.metadata.num_rows, 1)
            for batch in parquet.iter_batches(batch_size=RECORDS_PER_TASK):
                self._done = self.size * index // total
                items = []
                for rec in batch.to_pylist():
                    problem = None
                    if dups:
                        problem = ("duplicate_key", dups[0], f"column {dups[0]!r} appears twice; keep only one")
                    items.append((None, index, rec, problem))
                    index += 1
                yield ("records", items)
            self._done = self.size
        except LimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged or exotic file raises
            self._fail(f"the Parquet file cannot be read: {type(exc).__name__}: {exc}")


def _iter_lines(stream, chunk_bytes: int, limit: int):
    """Physical lines of a binary stream, each with its line break; raises LimitExceeded for a line over
    ``limit`` bytes (before more of it is read)."""
    parts, pending, number = [], 0, 0  # pending: bytes of the unfinished line; number: lines yielded
    while data := stream.read(min(chunk_bytes, limit)):
        if b"\n" not in data:
            parts.append(data)  # a long line: join once, when it ends
            pending += len(data)
            if pending > limit:
                raise LimitExceeded(record_too_long(f"line {number + 1}", limit), line=number + 1)
            continue
        if pending and pending + data.find(b"\n") > limit:
            raise LimitExceeded(record_too_long(f"line {number + 1}", limit), line=number + 1)
        lines = b"".join([*parts, data]).split(b"\n")
        parts = [lines.pop()]
        pending = len(parts[0])
        number += len(lines)
        for line in lines:
            yield line + b"\n"
    rest = b"".join(parts)
    if rest:
        yield rest


def _csv_record(header, dups, row, bad_lines, line, last):
    """``(record, problem)`` for one CSV row spanning physical lines ``line..last``."""
    problem = None
    if len(row) > len(header):
        problem = (
            "unknown_field",
            f"column {len(header) + 1}",
            f"line has {len(row)} values but the header names {len(header)} columns",
        )
    if dups:
        problem = ("duplicate_key", dups[0], f"column {dups[0]!r} appears twice in the header; keep only one")
    bad = [n for n in range(line, last + 1) if n in bad_lines]
    if bad:
        problem = ("invalid_utf8", None, bad_lines[bad[0]])
    return dict(zip(header, row)), problem


def _json_values(stream, chunk_bytes: int, source: Source):
    """Yield ``(None, index, value, problem)`` for each element of a JSON array or value stream."""
    js = JsonScanner(stream, chunk_bytes, source.max_record)
    js.fill(chunk_bytes)
    js.buf = js.buf.removeprefix("\ufeff")
    if not js.skip_ws():
        return
    array = js.buf[js.pos] == "["
    js.pos += array
    index = 0
    while True:
        if not js.skip_ws():
            if array:
                source._fail("the JSON array is not closed: the file ends before its final ']'", "invalid_json")
            return
        if array and js.buf[js.pos] == "]":
            js.pos += 1
            if js.skip_ws():
                source._fail("there is more text after the JSON array's closing ']'", "invalid_json")
            return
        if array and index:
            if js.buf[js.pos] != ",":
                source._fail(f"expected ',' or ']' after record {index - 1}", "invalid_json")
                return
            js.pos += 1
            js.skip_ws()
        try:
            value, text = js.value()
        except TooLong:
            raise LimitExceeded(record_too_long(f"record {index}", source.max_record), index=index) from None
        except ValueError as exc:
            source.problems.append((None, index, "invalid_json", None, f"record {index} is not valid JSON: {exc}"))
            source._fail(f"the JSON is broken at record {index}; nothing after it can be read")
            return
        problem = None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                problem = ("invalid_utf8", None, "record is not valid UTF-8; re-save the file as UTF-8")
        yield (None, index, value, problem or duplicate_key(text, value))
        index += 1
