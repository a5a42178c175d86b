"""Applying a format to a chunk of records: the work each import worker process does.

A *task* from :mod:`oikyo.data.readers` (JSONL lines, a byte range of them, or parsed records)
goes in; out comes ``(rows, tables, problems, lines)``: the number of valid rows, the rows as
Arrow tables with :data:`oikyo.data.schema.ARROW_SCHEMA`, the problems as ``(line, index, error,
field, message)`` tuples, and for JSONL the number of lines the chunk held (line numbers in its
problems count from 1 within the chunk; :mod:`oikyo.data.ingest` adds the lines before it).

A chunk of JSONL lines first tries the columnar fast path (:mod:`oikyo.data.formats.columnar`),
which takes whole chunks of plain records of some formats. Otherwise :func:`add_lines` goes row by
row: it parses each line with orjson, proves the absence of duplicate keys with a colon count, and
calls the format's converter directly; any record that is not plain sails through
:meth:`Chunk.add`, which finds and words the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate, chain
from operator import itemgetter
from typing import Callable

import orjson

from oikyo.data import readers
from oikyo.data.formats import columnar
from oikyo.data.formats.base import Format, RowError, metadata_text, row_bytes
from oikyo.data.schema import ARROW_SCHEMA, COLUMNS, MESSAGE_EXTRAS, NON_STRING, SPLITS, messages_array

# A chunk's rows become Arrow tables every TABLE_ROWS rows (or TABLE_BYTES of text): the row
# dicts are freed early, so the worker reuses its memory instead of mapping fresh pages, which
# costs more than the conversion on a virtual machine.
TABLE_ROWS = 1024
TABLE_BYTES = 64 << 20
INTERNAL = "internal error while converting this record (please report it)"
# The columns other than messages that each kind fills.
SCALARS = {"conversations": ("tools", "label", "metadata", "split"), "text": ("text", "metadata", "split"),
           "preference": ("chosen", "rejected", "tools", "metadata", "split"),
           "unpaired_preference": ("desirable", "tools", "metadata", "split")}


@dataclass
class Job:
    """Everything a worker needs to convert records (pickled once per worker)."""

    fmt: Format | None
    mapping: dict[str, str]
    length_fn: Callable[[dict], int] | None
    max_tokens: int | None
    drop: frozenset[str] = frozenset()  # --drop: source columns to leave out (ids, urls ...)
    keep: tuple[str, ...] = ()  # --keep: source columns kept as row metadata


def rename(rec: dict, mapping: dict[str, str], drop: frozenset[str] = frozenset()) -> dict:
    """Leave out ``--drop`` columns, then apply ``--map field=column`` renames (all at once, so
    swapping two columns works)."""
    for column in drop:
        rec.pop(column, None)
    moved = {name: rec.pop(column) for name, column in mapping.items() if column in rec}
    for name in moved:
        if name in rec:
            raise RowError(
                "duplicate_key", name, f"the record has a {name!r} field and also column {mapping[name]!r} mapped to it"
            )
    rec.update(moved)
    return rec


_HEAD = re.compile(r"[.\[]")


def source_field(path: str | None, mapping: dict[str, str]) -> str | None:
    """A field path in the user's own column names (undoing ``--map``)."""
    if not path or not mapping:
        return path
    head = _HEAD.split(path, 1)[0]
    column = mapping.get(head)
    return column + path[len(head) :] if column else path


class Chunk:
    """Converts the records of one task and gathers their rows as Arrow tables."""

    def __init__(self, job: Job, build: bool):
        self.job, self.build = job, build
        self.kind = job.fmt.kind if job.fmt else "conversations"
        self.problems: list[tuple] = []
        self.count = 0  # valid rows
        self.rows: list[dict] = []  # kept only while building
        self.tables = []
        self.size = 0  # characters of text in self.rows (roughly)
        self.wide = False  # some kept row has a column besides messages
        # The plain converter, when no mapping or length limit has to be applied around it.
        plain = job.fmt is not None and not job.mapping and not job.drop and not job.keep and job.max_tokens is None
        self.fast = job.fmt.convert if plain else None

    def add(self, line, index, value, problem) -> None:
        """Validate and convert one parsed record (or record the problem already found)."""
        if problem is None:
            try:
                row = self._convert(value)
                size = len(row_bytes(row))  # raises for lone surrogates (from CSV or Parquet text), which UTF-8 cannot store
            except RowError as exc:
                problem = (exc.error, source_field(exc.field, self.job.mapping), exc.message)
            except orjson.JSONEncodeError:
                problem = ("invalid_utf8", None, "record holds text that is not valid Unicode; re-save it as UTF-8")
            except Exception as exc:  # noqa: BLE001 - a bad record must never crash an import
                problem = ("wrong_type", None, f"{INTERNAL}: {type(exc).__name__}: {exc}")
        if problem is None and self.job.max_tokens is not None:
            # Outside the try above: an error in the caller's length_fn is theirs to see.
            length = self.job.length_fn(row)
            if length > self.job.max_tokens:
                message = (
                    f"record is {length} tokens, over the limit of {self.job.max_tokens}; "
                    "shorten or split it (rows are never truncated)"
                )
                problem = ("too_long", None, message)
        if problem is not None:
            self.problems.append((line, index, *problem))
            return
        self.add_rows([row], size)

    def add_rows(self, rows: list[dict], size: int) -> None:
        """Keep valid rows (``size``: roughly their characters of text, to bound a table's memory)."""
        if not rows:
            return
        self.count += len(rows)
        if self.build:
            self.rows += rows
            self.wide = self.wide or max(map(len, rows)) > 1
            self.size += size
            if self.size >= TABLE_BYTES or len(self.rows) >= TABLE_ROWS:
                self._cut()

    def add_table(self, table) -> None:
        """Keep a table of valid canonical rows (the columnar fast path's)."""
        self.count += table.num_rows
        if self.build:
            self._cut()  # rows kept before it stay before it
            self.tables.append(table)

    def _convert(self, value) -> dict:
        job = self.job
        if type(value) is not dict:
            raise RowError("not_object", None, "each record must be a JSON object ({...}); this one is not")
        if job.mapping or job.drop:
            value = rename(value, job.mapping, job.drop)
        if job.fmt is None:
            raise RowError("ambiguous_format", None, "the format of this file is not known")
        split = value.pop("split", None)
        # Row metadata: an oikyo export's "metadata" object, plus the user's --keep columns.
        metadata = metadata_text(value.pop("metadata", None), {c: value.pop(c) for c in job.keep if c in value})
        row = job.fmt.convert(value)
        if split is not None:
            # A file that is already split (an oikyo export, or the user's own) keeps its split.
            if split not in SPLITS:
                raise RowError("wrong_type", "split", f"split must be one of {', '.join(SPLITS)}, not {split!r}")
            row["split"] = split
        if metadata is not None:
            row["metadata"] = metadata
        return row

    def _cut(self) -> None:
        """Turn the kept rows into one Arrow table, column by column."""
        import pyarrow as pa

        rows, n, wide = self.rows, len(self.rows), self.wide
        self.rows, self.size, self.wide = [], 0, False
        if not n:
            return
        if self.kind == "text":
            messages = pa.nulls(n, ARROW_SCHEMA.field("messages").type)
        else:
            turns = list(map(itemgetter("messages"), rows))
            flat = list(chain.from_iterable(turns))
            roles = pa.array(list(map(itemgetter("role"), flat)), pa.string())
            contents = pa.array(list(map(itemgetter("content"), flat)), pa.string())
            extras = None
            if max(map(len, flat), default=2) > 2:  # some turn has reasoning, a weight, a name or an id
                extras = {name: pa.array([m.get(name) for m in flat], kind) for name, kind in MESSAGE_EXTRAS}
            offsets = pa.array(list(accumulate(map(len, turns), initial=0)), pa.int32())
            messages = messages_array(offsets, roles, contents, extras)
        # Chat rows are usually just messages: their other columns are null, no need to look.
        scalars = SCALARS[self.kind] if self.kind != "conversations" or wide else ()
        columns = [messages]
        for name in COLUMNS[1:]:
            kind = NON_STRING.get(name, pa.string())
            values = [row.get(name) for row in rows] if name in scalars else None
            columns.append(pa.nulls(n, kind) if values is None else pa.array(values, kind))
        self.tables.append(pa.Table.from_arrays(columns, schema=ARROW_SCHEMA))

    def result(self) -> tuple:
        """``(rows, tables, problems)``: what the main process needs, cheap to pickle."""
        if not self.build:
            return self.count, [], self.problems
        self._cut()
        return self.count, self.tables, self.problems


def _parse_problem(line: bytes) -> tuple:
    return readers.parse_line(line)[1]


def _blocks(data: bytes, size: int = 1 << 16):
    """``data`` in pieces of about ``size`` bytes that end on line breaks (the last may not)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + size) + 1 or len(data)
        yield data[start:end] if start or end < len(data) else data
        start = end


def add_lines(chunk: Chunk, data: bytes) -> int:
    """The JSONL hot path: parse, check and convert each line of ``data``; returns its line count.

    Lines are numbered from 1 within the chunk; the main process adds the lines before it. The
    chunk is split into lines a block at a time, so only a block's worth of lines is alive at once.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    fast, add, add_rows, keyish = chunk.fast, chunk.add, chunk.add_rows, readers.KEYISH.findall
    number = 0
    for block in _blocks(data):
        rows, size = [], 0  # the block's valid rows so far, handed to the chunk in one call
        for number, line in enumerate(block.split(b"\n"), number + 1):  # noqa: B020 - numbering goes on
            if not line or line.isspace():
                continue  # blank lines are skipped
            try:
                value = loads(line)
            except decode_error:
                value, problem = None, _parse_problem(line)
            else:
                # As many colons (or `"\s*:` key endings) as top-level keys proves there is no duplicate
                # key (see readers.duplicate_key); the second count is for text that holds colons.
                if fast is not None and type(value) is dict and (
                    line.count(b":") == len(value) or len(keyish(line)) == len(value)
                ):
                    try:
                        rows.append(fast(value))
                        size += len(line)
                        continue
                    except Exception:  # noqa: BLE001 - the slow path below reports it properly
                        pass
                problem = readers.duplicate_key(line, value)
            add_rows(rows, size)  # keep the rows in file order around the slow path
            rows, size = [], 0
            add(number, None, value, problem)
        add_rows(rows, size)
        number -= 1  # a block ends with a line break: its last, empty piece is not a line
    return number + (0 if data.endswith(b"\n") or not data else 1)


def process_task(task: tuple, build: bool, job: Job) -> tuple:
    """Parse, validate and convert one task (see :mod:`oikyo.data.readers` for task shapes)."""
    chunk = Chunk(job, build)
    lines = None  # records carry their own line numbers
    if task[0] == "records":
        for line, index, value, problem in task[1]:
            chunk.add(line, index, value, problem)
    else:
        if task[0] == "range":
            _, path, start, end = task
            with open(path, "rb") as file:
                file.seek(start)
                data = file.read(end - start)
        else:
            data = task[1]
        table = columnar.convert_chunk(job.fmt.name, data) if chunk.fast is not None else None
        if table is not None:
            chunk.add_table(table)
            lines = columnar.line_count(data)
        else:
            lines = add_lines(chunk, data)
    return (*chunk.result(), lines)
