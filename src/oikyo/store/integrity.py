"""Workspace integrity: blobs and records that do not agree (``oikyo workspace check``).

Three kinds of problem:

- ``corrupted``: a blob in ``artifacts/sha256/..`` whose bytes do not hash to the sha256 in its name;
- ``orphan``: a blob that nothing names: no column of any table (every text and JSON column is
  searched for artifact keys, so a new column that stores keys is covered without a change here),
  no checkpoint's manifest-key file under ``runs/``, and no folder manifest that one of those names;
- ``missing``: a record that points at a file that is gone: a dataset version's or an evaluation's
  blob, a model version's folder (when no manifest in a shared store can rebuild it), a
  checkpoint's folder (likewise), a base model's converted folder.

With a shared artifact store (``OIKYO_ARTIFACTS_URL``) a blob missing here but present there is
fine (it is fetched on use). The check only reads. :func:`remove_orphans` deletes orphans, and
only those older than a grace period: a blob is stored a moment before the record that names it
is committed, so a young orphan may be a write in progress.

Usage::

    problems = integrity.check()
    removed = integrity.remove_orphans([p for p in problems if p.kind == "orphan"])
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import JSON, String, Text, select

from oikyo import workspace
from oikyo.store import artifacts, db, manifests
from oikyo.store.models import Base, BaseModel, Checkpoint, DatasetVersion, Evaluation, ModelVersion

KEY = re.compile(r"sha256/[0-9a-f]{2}/[0-9a-f]{62}(?:\.[A-Za-z0-9]{1,16})?")
MANIFEST_SIDECAR = "*.manifest"  # checkpoints/step-NNNNNN.manifest (oikyo.train.checkpoints)
ORPHAN_GRACE_S = 3600


@dataclass
class Problem:
    kind: str     # corrupted | orphan | missing
    subject: str  # the blob's key, or the record ("dataset version ds-...")
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _blobs() -> Iterator[tuple[str, Path]]:
    """(key, path) of every blob in this workspace's artifact folder."""
    root = workspace.subdir("artifacts") / "sha256"
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*")):
        key = path.relative_to(root.parent).as_posix()
        if path.is_file() and KEY.fullmatch(key):
            yield key, path


def _keys_in_database() -> set[str]:
    """Every artifact key named anywhere in the database (all text and JSON columns of all tables)."""
    found: set[str] = set()
    engine = db.engine()
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
            if not columns:
                continue
            for row in conn.execute(select(*columns)).yield_per(1000):
                for value in row:
                    if value is not None:
                        found.update(KEY.findall(value if isinstance(value, str) else json.dumps(value)))
    return found


def _keys_in_runs() -> set[str]:
    """Manifest keys written beside checkpoint folders (a checkpoint's record may not be synced yet)."""
    found: set[str] = set()
    runs = workspace.home() / "runs"
    if runs.is_dir():
        for sidecar in runs.glob(f"*/checkpoints/{MANIFEST_SIDECAR}"):
            found.update(KEY.findall(sidecar.read_text(errors="replace")))
    return found


def referenced_keys() -> set[str]:
    """Every key something names, with the files of every folder manifest among them."""
    named = _keys_in_database() | _keys_in_runs()
    for key in [k for k in named if k.endswith(".json")]:
        path = artifacts.cache_path(key)
        if not path.is_file():
            continue
        try:
            files = json.loads(path.read_text()).get("files")
        except (ValueError, UnicodeDecodeError, AttributeError):
            continue  # a JSON blob that is not a folder manifest (a dataset's dropped rows)
        if isinstance(files, dict):
            named.update(entry["key"] for entry in files.values() if isinstance(entry, dict) and "key" in entry)
    return named


def _blob_present(key: str) -> bool:
    if artifacts.cache_path(key).is_file():
        return True
    if not artifacts.is_remote():
        return False
    fs, remote = artifacts._remote(key)  # noqa: SLF001 - the store's own address of a key
    return fs.exists(remote)


def _missing_records() -> Iterator[Problem]:
    with db.session() as s:
        datasets = list(s.scalars(select(DatasetVersion)))
        evaluations = list(s.scalars(select(Evaluation).where(Evaluation.artifact.is_not(None))))
        versions = list(s.scalars(select(ModelVersion)))
        checkpoints = list(s.scalars(select(Checkpoint)))
        bases = list(s.scalars(select(BaseModel)))
    for d in datasets:
        for label, key in (("rows", d.artifact), ("dropped rows", d.dropped_artifact)):
            if key and not _blob_present(key):
                yield Problem("missing", f"dataset version {d.id} ({d.name})", f"its {label} blob {key} is gone")
    for e in evaluations:
        if not _blob_present(e.artifact):
            yield Problem("missing", f"evaluation {e.id}", f"its per-example blob {e.artifact} is gone")
    for mv in versions:
        manifest = (mv.lineage or {}).get("manifest")
        if not Path(mv.path).is_dir() and not (manifest and _blob_present(manifest)):
            yield Problem("missing", f"model version {mv.id}", f"its folder {mv.path} is gone and no manifest can rebuild it")
    for c in checkpoints:
        if not Path(c.path).is_dir() and not (c.manifest and _blob_present(c.manifest)):
            yield Problem("missing", f"checkpoint {c.run_id} step {c.step}", f"its folder {c.path} is gone")
    for b in bases:
        if not Path(b.path).exists():
            yield Problem("missing", f"base model {b.name}", f"its folder {b.path} is gone (`oikyo models add` again)")


def check(*, progress: Callable[[int, int], None] | None = None) -> list[Problem]:
    """Every corrupted blob, orphaned blob and record pointing at a missing file, in that order."""
    blobs = list(_blobs())
    total, done = sum(path.stat().st_size for _, path in blobs), 0
    problems: list[Problem] = []
    for key, path in blobs:
        digest = artifacts.file_sha256(path)
        done += path.stat().st_size
        if progress:
            progress(done, total)
        if digest != artifacts.digest_of(key):
            problems.append(Problem("corrupted", key, f"its content hashes to {digest[:16]}..."))
    named = {artifacts.digest_of(key) for key in referenced_keys()}  # by digest: a suffix never hides a reference
    for key, path in blobs:
        if artifacts.digest_of(key) not in named:
            problems.append(Problem("orphan", key, f"{path.stat().st_size} bytes that no record names"))
    problems.extend(_missing_records())
    return problems


def remove_orphans(problems: list[Problem], *, min_age_s: float = ORPHAN_GRACE_S) -> list[str]:
    """Delete the orphaned blobs among ``problems`` that were last written over ``min_age_s`` ago.

    Each one is looked up again just before it goes, so a record added since the check keeps its blob.
    """
    candidates = [p.subject for p in problems if p.kind == "orphan"]
    if not candidates:
        return []
    named = {artifacts.digest_of(key) for key in referenced_keys()}
    removed = []
    for key in candidates:
        path = artifacts.cache_path(key)
        if artifacts.digest_of(key) in named or not path.is_file():
            continue
        if time.time() - path.stat().st_mtime < min_age_s:
            continue
        os.unlink(path)
        removed.append(key)
    return removed
