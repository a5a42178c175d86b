"""Immutable, content-addressed dataset versions: the data stage's service API.

A version is a Parquet file of canonical rows (see :mod:`oikyo.data.schema`) in the artifact
store plus one record in the database. Its id is the start of the hash of its content, so
importing the same content twice gives the same version, and nothing ever changes a version:
splitting makes a new one whose lineage points at its parent.

Usage::

    from oikyo.data import versions
    outcome = versions.import_dataset("train.jsonl", name="support")
    version = outcome.version            # a DatasetVersion record
    for row in versions.iter_rows(version, split="train"):
        ...

References users type (:func:`resolve`): a version id or a unique prefix of at least 4 hex
digits, a dataset name (its newest version), or ``name@id``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from oikyo.data import ingest
from oikyo.data.schema import ARROW_SCHEMA, SPLITS, compact_row
from oikyo.errors import OikyoError
from oikyo.store import artifacts, db
from oikyo.store.models import DatasetVersion

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ID_LEN = 12


class DataError(OikyoError):
    """A problem with the user's data or request, with a message meant for the user."""


class ImportFailed(DataError):
    """The file did not pass validation; ``result`` holds every problem found."""

    def __init__(self, result: ingest.ImportResult):
        self.result = result
        total = sum(result.problem_counts.values())
        super().__init__(result.question or f"{total} problem(s) found; nothing was stored")


@dataclass
class ImportOutcome:
    version: DatasetVersion
    result: ingest.ImportResult
    existed: bool  # the same content was already stored: no new version was made


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise DataError(
            f"invalid dataset name {name!r}: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return name


def import_dataset(
    path: str | Path,
    *,
    name: str | None = None,
    format: str = "auto",
    mapping: dict[str, str] | None = None,
    drop: list[str] | None = None,
    keep: list[str] | None = None,
    on_error: str = "fail",
    length_fn: Callable[[dict], int] | None = None,
    max_tokens: int | None = None,
    min_rows: int = 1,
    eval_set: bool = False,
    lineage_extra: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    text_unit: str | None = None,
) -> ImportOutcome:
    """Validate and convert ``path``, then store it as a dataset version.

    Raises :class:`ImportFailed` (nothing stored) when validation fails in ``fail`` mode or the
    format is ambiguous, and :class:`DataError` for a missing file or a bad option.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    if on_error not in ("fail", "skip"):
        raise DataError(f"--on-error must be 'fail' or 'skip', not {on_error!r}")
    if format != "auto" and format not in ingest.available_formats():
        raise DataError(f"unknown format {format!r}; known: auto, {', '.join(ingest.available_formats())}")
    _check_text_unit(path, text_unit)
    name = check_name(name or default_name(path))
    both = sorted(set(drop or ()) & set(keep or ()))
    if both:
        raise DataError(f"column {both[0]!r} is given to both --keep and --drop; choose one")

    tmp = artifacts.temp_path(".parquet")
    try:
        result = ingest.convert_file(
            path, tmp, format=format, mapping=mapping, drop=drop or (), keep=keep or (), on_error=on_error, length_fn=length_fn,
            max_tokens=max_tokens, min_rows=min_rows, progress=progress, text_unit=text_unit,
        )
        if not result.ok:
            raise ImportFailed(result)
        existing = by_hash(result.content_hash)
        if existing is not None:
            return ImportOutcome(existing, result, existed=True)
        lineage = {
            "operation": "import",
            "source": {"path": str(path.resolve()), "sha256": result.source_sha256,
                       "size": path.stat().st_size},
            "options": {"format": format, "detected_format": result.format, "mapping": mapping or {},
                        "drop": sorted(drop or []), "keep": list(keep or []), "on_error": on_error, "max_tokens": max_tokens, "min_rows": min_rows,
                        **_text_options(result.text_layout), **(lineage_extra or {})},
            "dropped": result.dropped,
        }
        version = store_version(tmp, result.content_hash, name=name, kind=result.kind, fmt=result.format,
                         rows=result.rows, lineage=lineage, eval_set=eval_set, splits=_split_counts(tmp),
                         dropped=[p.to_dict() for p in result.dropped_rows])
        # Not our lineage: a concurrent import of the same content stored its version first.
        return ImportOutcome(version, result, existed=version.lineage is not lineage)
    finally:
        tmp.unlink(missing_ok=True)


def _check_text_unit(path: Path, text_unit: str | None) -> None:
    """``--text-unit`` is "line" or "block", and only for plain-text files."""
    from oikyo.data import readers

    if text_unit is None:
        return
    if text_unit not in readers.TEXT_UNITS:
        raise DataError(f"--text-unit must be one of {', '.join(readers.TEXT_UNITS)}, not {text_unit!r}")
    try:
        filetype = readers.sniff(path)[0]
    except readers.ReadError:
        return  # the import says why the file cannot be read
    if filetype != "text":
        raise DataError(f"--text-unit applies to plain-text files (.txt, .md) only; {path.name} reads as {filetype}")


def _text_options(layout: dict | None) -> dict:
    """Lineage options of a plain-text import: the unit used and whether it was detected."""
    if layout is None:
        return {}
    return {"text_unit": layout["unit"], "text_unit_detected": layout["detected"], "blank_lines": layout["blank_lines"]}


def _split_counts(parquet: Path) -> dict | None:
    """Rows per split of a file that came already split (None when it did not)."""
    column = pq.read_table(parquet, columns=["split"]).column("split")
    counts = column.value_counts().to_pylist()
    splits = {c["values"]: c["counts"] for c in counts if c["values"] is not None}
    return splits or None


def default_name(path: Path) -> str:
    """A dataset name from a file name: its stem with unusual characters replaced by '-'."""
    stem = path.name
    for suffix in (".gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".md"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "dataset"
    return stem[:100]


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["instruction=question", ...]`` (the ``--map`` option) as ``{"instruction": "question"}``."""
    mapping = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise DataError(f"--map takes field=column (for example --map instruction=question), not {pair!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def by_hash(content_hash: str) -> DatasetVersion | None:
    with db.session() as s:
        return s.scalar(select(DatasetVersion).where(DatasetVersion.content_hash == content_hash))


def store_version(parquet: Path, content_hash: str, *, name: str, kind: str, fmt: str | None, rows: int,
           lineage: dict, eval_set: bool = False, parent_id: str | None = None,
           splits: dict | None = None, dropped: list[dict] | None = None) -> DatasetVersion:
    """Move a finished Parquet file into the artifact store and record the version (one transaction).

    When another process recorded the same content first (callers look it up with :func:`by_hash`
    before converting, so two imports of one file at once both get here), that version is returned.
    """
    key = artifacts.put(parquet, ".parquet")
    dropped_key = artifacts.put_bytes(json.dumps(dropped, indent=1).encode(), ".json") if dropped else None
    version = DatasetVersion(
        id=content_hash[:ID_LEN], content_hash=content_hash, name=name, kind=kind, format=fmt,
        rows=rows, artifact=key, parent_id=parent_id, lineage=lineage, splits=splits,
        is_eval_set=eval_set, dropped_artifact=dropped_key,
    )
    try:
        with db.session() as s:
            s.add(version)
    except IntegrityError:
        existing = by_hash(content_hash)
        if existing is None:
            raise
        return existing
    return version


def resolve(ref: str) -> DatasetVersion:
    """The version a user means by ``ref`` (id, id prefix, name, or name@id)."""
    if not isinstance(ref, str) or not ref.strip():
        raise DataError("no dataset given: name a dataset version (its id, name or name@id)")
    ref = ref.strip()
    name, _, vid = ref.partition("@") if "@" in ref else ("", "", "")
    with db.session() as s:
        if name:
            found = s.scalars(select(DatasetVersion).where(
                DatasetVersion.name == name, DatasetVersion.id.startswith(vid))).all()
        else:
            found = []
            if re.fullmatch(r"[0-9a-f]{4,64}", ref):
                found = s.scalars(select(DatasetVersion).where(
                    DatasetVersion.id.startswith(ref[:ID_LEN]))).all()
            if not found:
                newest = s.scalars(select(DatasetVersion).where(DatasetVersion.name == ref)
                                   .order_by(DatasetVersion.created_at.desc()).limit(1)).all()
                found = newest
    if not found:
        raise DataError(f"no dataset version matches {ref!r}; `oikyo data list` shows them")
    if len(found) > 1:
        ids = ", ".join(v.id for v in found[:5])
        raise DataError(f"{ref!r} matches several versions ({ids}); give more of the id")
    return found[0]


def list_versions(name: str | None = None, limit: int | None = None) -> list[DatasetVersion]:
    """Versions, newest first (only ``name``'s when given; at most ``limit`` when given)."""
    with db.session() as s:
        query = select(DatasetVersion).order_by(DatasetVersion.created_at.desc())
        if name:
            query = query.where(DatasetVersion.name == name)
        if limit:
            query = query.limit(limit)
        return list(s.scalars(query).all())


def set_eval_set(ref: str, flag: bool = True) -> DatasetVersion:
    """Mark a version as an evaluation set: every report then checks other data for leakage into it."""
    version = resolve(ref)
    with db.session() as s:
        record = s.get(DatasetVersion, version.id)
        record.is_eval_set = flag
    version.is_eval_set = flag
    return version


def eval_sets(exclude: str | None = None) -> list[DatasetVersion]:
    with db.session() as s:
        query = select(DatasetVersion).where(DatasetVersion.is_eval_set.is_(True))
        return [v for v in s.scalars(query).all() if v.id != exclude]


def parquet_path(version: DatasetVersion) -> Path:
    return artifacts.path_of(version.artifact)


def iter_rows(version: DatasetVersion, split: str | None = None, batch_size: int = 4096) -> Iterator[dict]:
    """Stream a version's canonical rows (only one split's when ``split`` is given)."""
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    if split is not None and not version.splits:
        raise DataError(f"dataset {version.name}@{version.id} is not split; run `oikyo data split` first")
    parquet = pq.ParquetFile(parquet_path(version))
    for batch in parquet.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            if split is None or row.get("split") == split:
                yield compact_row(row)


def page_rows(version: DatasetVersion, *, split: str | None = None, offset: int = 0, limit: int = 50) -> list[dict]:
    """Rows ``offset`` to ``offset + limit`` of a version (of one split, when given), for previews.

    Without a split, whole Parquet row groups before ``offset`` are skipped unread.
    """
    if offset < 0 or limit < 0:
        raise DataError("offset and limit must not be negative")
    if split is not None:
        return list(islice(iter_rows(version, split=split), offset, offset + limit))
    parquet = pq.ParquetFile(parquet_path(version))
    rows: list[dict] = []
    for group in range(parquet.num_row_groups):
        size = parquet.metadata.row_group(group).num_rows
        if offset >= size:
            offset -= size
            continue
        table = parquet.read_row_group(group).slice(offset, limit - len(rows))
        rows += [compact_row(row) for row in table.to_pylist()]
        offset = 0
        if len(rows) >= limit:
            break
    return rows


def quality_report(version: DatasetVersion, count_tokens: Callable[[str], int] | None = None) -> dict:
    """The quality report of a version (``oikyo data report --json``), with leakage checked against
    every registered evaluation set but this version itself."""
    from oikyo.data import quality

    sets = {f"{v.name}@{v.id}": iter_rows(v) for v in eval_sets(exclude=version.id)}
    return quality.build_report(iter_rows(version), version.kind, count_tokens=count_tokens, eval_sets=sets)


def dropped_rows(version: DatasetVersion) -> list[dict]:
    """The rows an import in skip mode left out, with their location and reason."""
    if not version.dropped_artifact:
        return []
    return json.loads(artifacts.path_of(version.dropped_artifact).read_text())


def describe(version: DatasetVersion) -> dict:
    """A JSON-serializable description of a version (what `oikyo data show --json` prints)."""
    return {
        "id": version.id, "name": version.name, "content_hash": version.content_hash,
        "kind": version.kind, "format": version.format, "rows": version.rows,
        "splits": version.splits, "parent": version.parent_id, "eval_set": version.is_eval_set,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "lineage": version.lineage, "path": str(parquet_path(version)),
    }


def write_parquet_rows(rows: Iterator[dict], out: Path, batch_rows: int = 4096) -> tuple[int, str]:
    """Write canonical rows to ``out`` with the fixed schema; returns (row count, content hash)."""
    import pyarrow as pa

    from oikyo.data.digest import RowsDigest

    digest, buffer = RowsDigest(), []  # the same content hash as an import's
    with pq.ParquetWriter(out, ARROW_SCHEMA) as writer:

        def flush() -> None:
            table = pa.Table.from_pylist(buffer, schema=ARROW_SCHEMA)
            digest.update(table)
            writer.write_table(table)
            buffer.clear()

        for row in rows:
            buffer.append(row)
            if len(buffer) >= batch_rows:
                flush()
        if buffer:
            flush()
    return digest.rows, digest.hexdigest()
