"""The data ingest engine: turn a user's file into a Parquet file of canonical rows, or say exactly why not.

This is the engine behind ``oikyo data import``::

    from oikyo.data.ingest import convert_file
    result = convert_file("train.jsonl", "rows.parquet", format="auto", on_error="fail")
    if not result.ok:
        for problem in result.problems:           # the first 50, each with its location
            print(problem.location(), problem.error, problem.message)
        print(result.question or result.problem_counts)

Steps: the file type is sniffed (:mod:`oikyo.data.readers`), the format is detected from the first
~100 records (:mod:`oikyo.data.formats.detect`) unless given, then every record is parsed,
validated and converted to a canonical row (:mod:`oikyo.data.schema`) by one of the registered
formats (:mod:`oikyo.data.formats`). Files over a few MB are processed by a pool of worker
processes, each handling one chunk of the file; the main process receives the chunks' results in
order, hashes the rows and writes them to Parquet. Nothing is stored when validation fails
(``on_error="fail"``); with ``on_error="skip"`` bad rows are dropped and every one is listed.

The content hash of a dataset covers its canonical rows in order (:mod:`oikyo.data.digest`), so
the same rows give the same hash whatever file they were read from.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import multiprocessing
import os
import sys
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from oikyo.data import formats as registry
from oikyo.data import readers
from oikyo.data.digest import RowsDigest
from oikyo.data.formats.base import Format, RowError, row_bytes
from oikyo.data.formats.convert import Job, process_task, rename
from oikyo.data.formats.detect import Detection, detect
from oikyo.data.schema import ARROW_SCHEMA

__all__ = ["ImportResult", "Problem", "available_formats", "convert_file", "detect_format", "row_bytes"]

ERROR_CLASSES = (
    "invalid_json", "not_object", "missing_field", "unknown_field", "unknown_role", "empty_content",
    "no_assistant_turn", "wrong_type", "invalid_utf8", "duplicate_key", "too_long", "too_few_examples",
    "ambiguous_format", "unreadable_file",
)  # fmt: skip
# Problems that fail an import even with on_error="skip": they concern the file, not one row.
FILE_ERRORS = frozenset({"unreadable_file", "ambiguous_format", "too_few_examples"})
MAX_PROBLEMS = 50  # problems kept in full; counts are always exact
SAMPLE_RECORDS = 100  # records looked at to detect the format
SMALL_FILE = 5 << 20  # below this, no worker pool
ROW_GROUP_ROWS = 4096
ROW_GROUP_BYTES = 64 << 20


@dataclass
class Problem:
    """One thing wrong with the input: where it is, what class of error, and what to do."""

    error: str  # one of ERROR_CLASSES
    message: str  # plain English, says what to do
    line: int | None = None  # 1-based (JSONL, CSV, TSV; CSV counts its header line)
    index: int | None = None  # 0-based record number (JSON array, Parquet)
    field: str | None = None  # e.g. "messages[2].role"

    def location(self) -> str:
        """``"line 12"``, ``"record 5"`` or ``"file"``."""
        if self.line is not None:
            return f"line {self.line}"
        if self.index is not None:
            return f"record {self.index}"
        return "file"

    def to_dict(self) -> dict:
        return {**asdict(self), "location": self.location()}


@dataclass
class ImportResult:
    """What an import did: the format, the rows written, and every problem (counted exactly)."""

    ok: bool
    format: str | None  # detected or given format name
    kind: str | None  # canonical kind
    rows: int  # rows written
    dropped: int  # rows dropped (skip mode)
    problems: list[Problem]  # the first MAX_PROBLEMS problems in full
    problem_counts: dict[str, int]  # exact counts per error class over the whole file
    content_hash: str | None  # hex sha256 of the rows, see row_bytes
    source_sha256: str  # sha256 of the source file's bytes ("" when it cannot be read)
    question: str | None = None  # set when the format is ambiguous: the question for the user
    dropped_rows: list[Problem] = field(default_factory=list)  # skip mode: every dropped row and why
    # When the format is ambiguous, the choices behind the question:
    # [{"format": name, "mapping": {field: column}, "flags": "--format ... --map ..."}].
    suggestions: list[dict] = field(default_factory=list)
    # Plain text only (.txt, .md): {"unit": "line"|"block", "detected": bool, "blank_lines": n}.
    text_layout: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["problems"] = [p.to_dict() for p in self.problems]
        data["dropped_rows"] = [p.to_dict() for p in self.dropped_rows]
        return data


def available_formats() -> list[str]:
    """The names of the registered formats."""
    return list(registry.FORMATS)


# ---------------------------------------------------------------------------- detection


def _sample(path: Path, mapping: dict | None, drop: frozenset[str] = frozenset()) -> list[dict]:
    """The first SAMPLE_RECORDS JSON objects of the file, without ``drop`` columns, renamed by ``mapping``."""
    source = readers.Source(path)
    records = []
    try:
        for task in source.tasks():
            if task[0] == "records":
                values = (value for _, _, value, problem in task[1] if problem is None)
            else:
                values = (readers.parse_line(line)[0] for line in task[-1].split(b"\n") if line.strip())
            for value in values:
                if type(value) is dict:
                    try:
                        records.append(rename(value, mapping, drop) if mapping or drop else value)
                    except RowError:
                        continue
                    if len(records) >= SAMPLE_RECORDS:
                        return records
    finally:
        source.close()
    return records


def _detect(path: Path, mapping: dict | None, drop: frozenset[str] = frozenset()) -> tuple[Detection, int]:
    """The detection and how many records it was based on."""
    try:
        sample = _sample(path, mapping, drop)
    except readers.ReadError as exc:
        return Detection(None, f"The file cannot be read: {exc}"), 0
    return detect(sample, registry.FORMATS), len(sample)


def detect_format(path, mapping: dict | None = None) -> tuple[str | None, str | None]:
    """``(format_name, None)`` when the format is clear, else ``(None, question_for_the_user)``."""
    found, _ = _detect(Path(path), mapping)
    return found.format, found.question


# ---------------------------------------------------------------------------- worker processes


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job
    # A worker only builds plain rows: no reference cycles for the collector to find, and no use
    # for pandas, which pyarrow would otherwise import (~1 s per worker) on its first pa.array().
    gc.disable()
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    _keep_freed_memory()


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse rather than hand it back to the OS at once.

    Each task allocates and frees a few MB (the pickled result above all); returning that memory
    and faulting fresh pages in again for the next task cost ~20% of a worker's time on a virtual
    machine. Workers are short-lived processes of ours, so holding on to freed memory is harmless.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: serve blocks up to 32 MB from the heap
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of free heap
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


class _NoPandas:
    """An import finder that makes ``import pandas`` fail (installed in worker processes only)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not needed in oikyo ingest workers")
        return None


def _run_task(task: tuple, build: bool):
    """Pool entry point: process one task with this worker's job."""
    return process_task(task, build, _JOB)


# ---------------------------------------------------------------------------- main side


class _Collector:
    """Problems in file order: the first MAX_PROBLEMS in full, exact counts, every dropped row."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.problems: list[Problem] = []
        self.counts: Counter[str] = Counter()
        self.dropped_rows: list[Problem] = []

    def add(self, line, index, error, field_path, message) -> None:
        self.counts[error] += 1
        keep = len(self.problems) < MAX_PROBLEMS
        row_level = line is not None or index is not None
        if keep or (self.skip and row_level):
            problem = Problem(error, message, line, index, field_path)
            if keep:
                self.problems.append(problem)
            if self.skip and row_level:
                self.dropped_rows.append(problem)


class _Output:
    """Writes rows to ``<out>.partial`` in row groups and hashes them; renamed into place at the end.

    Parquet encoding and compression run on a background thread (pyarrow releases the GIL), so the
    main process goes on receiving and hashing the next chunks meanwhile; writes stay in order.
    """

    MAX_QUEUED_WRITES = 2

    def __init__(self, out_path: Path):
        self.path = out_path
        self.partial = out_path.with_name(out_path.name + ".partial")
        self.hash = RowsDigest()
        self.writer = None
        self.pending: list = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="oikyo-parquet")
        self.writes: deque = deque()

    def add(self, tables: list) -> None:
        for table in tables:
            self.hash.update(table)
            self.pending.append(table)
            self.pending_rows += table.num_rows
            self.pending_bytes += table.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS or self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush(final=False)

    def _open(self):
        import pyarrow.parquet as pq

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(
                self.partial,
                ARROW_SCHEMA,
                compression="snappy",
                use_dictionary=["messages.list.element.role", "tools", "label", "split"],
                write_statistics=["label", "split"],
            )
        return self.writer

    def _flush(self, final: bool) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        keep = 0 if final or self.pending_bytes >= ROW_GROUP_BYTES else table.num_rows % ROW_GROUP_ROWS
        writer = self._open()
        while len(self.writes) >= self.MAX_QUEUED_WRITES:
            self.writes.popleft().result()  # bounds the memory held by queued tables; raises a write error
        self.writes.append(self.pool.submit(writer.write_table, table.slice(0, table.num_rows - keep),
                                            row_group_size=ROW_GROUP_ROWS))
        self.pending = [table.slice(table.num_rows - keep)] if keep else []
        self.pending_rows = keep
        self.pending_bytes = self.pending[0].nbytes if keep else 0

    def _drain(self) -> None:
        try:
            while self.writes:
                self.writes.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def finish(self) -> str:
        """Write what is left, move the file into place and return the content hash.

        A failed write (a full disk) removes the partial file before the error goes on.
        """
        try:
            self._flush(final=True)
            writer = self._open()
            self._drain()
            writer.close()
            os.replace(self.partial, self.path)
        except BaseException:
            self.abort()
            raise
        return self.hash.hexdigest()

    def abort(self) -> None:
        """Throw the partial file away, whatever state a failed write (a full disk) left the writer in."""
        try:
            self._drain()
            if self.writer is not None:
                self.writer.close()  # writes the footer: fails again on a full disk
        except Exception:  # noqa: BLE001 - the import is being thrown away: a write error changes nothing
            pass
        finally:
            self.partial.unlink(missing_ok=True)


class _State:
    build = True  # False once a fail-mode import has failed: only count problems from then on


def _tasks(source: readers.Source, state: _State, by_range: bool):
    for task in source.tasks(by_range=by_range):
        yield task, state.build, source.bytes_done


def _results(source: readers.Source, job: Job, workers: int, state: _State):
    """Each task's result with the bytes read so far, in file order; a pool when ``workers > 1``."""
    if workers <= 1:
        for task, build, done in _tasks(source, state, by_range=False):
            yield process_task(task, build, job), done
        return
    from concurrent.futures import ProcessPoolExecutor

    # fork starts workers at once and needs no importable __main__; it is only safe while the
    # caller runs a single thread, so otherwise the workers start from a clean forkserver.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(job,)) as pool:
        pending = deque()
        try:
            for task, build, done in _tasks(source, state, by_range=True):
                pending.append((pool.submit(_run_task, task, build), done))
                if len(pending) > 2 * workers:
                    future, done = pending.popleft()
                    yield future.result(), done
            while pending:
                future, done = pending.popleft()
                yield future.result(), done
        finally:
            for future, _ in pending:
                future.cancel()


def _file_result(error: str, message: str, path: Path, **extra) -> ImportResult:
    """A failed import with one file-level problem."""
    try:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        digest = ""
    return ImportResult(
        ok=False,
        format=extra.pop("format", None),
        kind=None,
        rows=0,
        dropped=0,
        problems=[Problem(error, message)],
        problem_counts={error: 1},
        content_hash=None,
        source_sha256=digest,
        **extra,
    )


def _choose_format(path: Path, name: str, mapping: dict, drop: frozenset[str] = frozenset(),
                   keep: tuple[str, ...] = ()) -> tuple[Format | None, ImportResult | None]:
    """The format to convert with, or the failed result that explains why there is none.

    Columns kept as metadata (``keep``) take no part in detection. A column the format does not
    use fails each record that has it (unknown_field, with its line), naming --keep/--drop/--map.
    """
    if name != "auto":
        fmt = registry.get(name)
        if fmt is None:
            known = ", ".join(registry.FORMATS)
            question = f"There is no format called {name!r}. Pass --format with one of: {known}"
            return None, _file_result("ambiguous_format", question, path, question=question)
        return fmt, None
    found, sampled = _detect(path, mapping, drop | frozenset(keep))
    if found.format is not None:
        return registry.get(found.format), None
    if not sampled:
        return None, None  # nothing readable: the scan reports why, row by row
    return None, _file_result(
        "ambiguous_format", found.question, path, question=found.question, suggestions=found.suggestions
    )


def _scan(source, job: Job, out_path: Path, skip: bool, workers: int, progress):
    """Read every record; returns the problems, the number of valid rows and the open output."""
    collector = _Collector(skip)
    output = _Output(out_path) if job.fmt is not None else None
    state, valid, line_base = _State(), 0, 0
    try:
        for (rows, tables, problems, lines), done in _results(source, job, workers, state):
            valid += rows
            if lines is not None:  # a chunk of JSONL lines, numbered from 1 within the chunk
                problems = [(line_base + line, *rest) for line, *rest in problems]
                line_base += lines
            for problem in problems:
                collector.add(*problem)
            if problems and not skip and output is not None:
                output.abort()  # fail mode: nothing will be stored, only count from here on
                output, state.build = None, False
            if output is not None:
                output.add(tables)
            if progress is not None:
                progress(done, source.size)
    except BaseException:
        if output is not None:
            output.abort()
        raise
    for problem in source.problems:
        collector.add(*problem)
    if progress is not None:
        progress(source.size, source.size)
    return collector, valid, output


def convert_file(
    path,
    out_path,
    *,
    format: str = "auto",
    mapping: dict[str, str] | None = None,
    drop: Iterable[str] = (),
    on_error: str = "fail",
    length_fn: Callable[[dict], int] | None = None,
    max_tokens: int | None = None,
    min_rows: int = 1,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    text_unit: str | None = None,
    keep: Iterable[str] = (),
) -> ImportResult:
    """Convert a dataset file to a Parquet file of canonical rows at ``out_path``.

    ``format``: a registered format name, or "auto" to detect it. ``mapping``: ``{field: column}``
    renames (``--map``). ``drop``: source columns to leave out (``--drop``). ``keep``: source columns
    kept as row metadata (``--keep``; the row's ``metadata`` column, JSON text). A column that the
    format does not use and that is neither kept nor dropped fails its records (``unknown_field``). ``on_error``: "fail" stores nothing when any record is bad; "skip" drops
    bad records and lists each in ``dropped_rows``. ``length_fn``/``max_tokens``: a picklable
    ``length_fn(row) -> int`` and a limit; longer rows are ``too_long`` problems (never cut).
    ``workers``: worker processes for large files (default: one per CPU). ``progress``: called
    as ``progress(bytes_done, bytes_total)``. ``text_unit``: the layout of a plain-text file, "line"
    or "block" (default: detected; see :mod:`oikyo.data.readers`); the result's ``text_layout``
    says which was used. Bad input never raises: it comes back as problems.
    ``out_path`` is only written when the result is ok.
    """
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if max_tokens is not None and length_fn is None:
        raise ValueError("max_tokens needs a length_fn to measure rows with")
    path, out_path, mapping = Path(path), Path(out_path), dict(mapping or {})
    if path.is_file() and path.stat().st_size == 0:
        return _file_result("too_few_examples", f"{path.name} is empty (0 bytes)", path)
    try:
        source = readers.Source(path, text_unit=text_unit)
    except readers.ReadError as exc:
        return _file_result("unreadable_file", f"{path.name}: {exc}", path)
    if source.filetype == "text" and format == "auto":
        format = "text"  # a plain-text file holds documents: there is nothing to detect
    drop, keep = frozenset(drop), tuple(dict.fromkeys(keep))
    both = sorted(drop & set(keep))
    if both:
        raise ValueError(f"column {both[0]!r} is given to both keep and drop; choose one")
    fmt, failed = _choose_format(path, format, mapping, drop, keep)
    if failed is not None:
        return failed
    job = Job(fmt, mapping, length_fn, max_tokens, drop, keep)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if source.size * (4 if source.gzipped else 1) < SMALL_FILE:  # gzip shrinks text ~4x
        workers = 1
    if multiprocessing.current_process().daemon:
        workers = 1  # a daemonic process may not start children of its own
    skip = on_error == "skip"
    try:
        collector, valid, output = _scan(source, job, out_path, skip, workers, progress)
        digest = source.sha256()
    except BrokenProcessPool:
        return _file_result("unreadable_file", "a worker process died while reading the file (out of memory?)", path)
    finally:
        source.close()
    if valid < min_rows:
        message = f"only {valid} valid rows; at least {min_rows} needed" if valid else "the file has no valid rows"
        collector.add(None, None, "too_few_examples", None, message)
    elif fmt is None:
        collector.add(None, None, "ambiguous_format", None, "the file has no records to tell its format from")
    ok = not source.fatal and not (collector.counts.keys() & FILE_ERRORS) and (skip or not collector.counts)
    content_hash = None
    if output is not None:
        content_hash = output.finish() if ok else output.abort()
    return ImportResult(
        ok=ok,
        format=fmt.name if fmt else None,
        kind=fmt.kind if fmt else None,
        rows=valid if ok else 0,
        dropped=len(collector.dropped_rows) if ok else 0,
        problems=collector.problems,
        problem_counts=dict(collector.counts),
        content_hash=content_hash,
        source_sha256=digest,
        dropped_rows=collector.dropped_rows,
        text_layout=None if source.text_unit is None else {
            "unit": source.text_unit, "detected": source.text_unit_detected, "blank_lines": source.blank_lines},
    )
