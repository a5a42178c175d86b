"""Workspace backups: an online, consistent copy of the database and the workspace's files, and its restore.

A backup is a folder::

    backup.json              what it holds: each file's size and sha256, the database's, the schema revision
    oikyo.db                 the SQLite database (through SQLite's own online backup API), or
    database.dump            a PostgreSQL dump (pg_dump, custom format)
    artifacts/ runs/ models/ the workspace's files

Why it is consistent while workers and servers keep writing: the database is copied first, as one
snapshot (SQLite's backup API copies in one read transaction; pg_dump reads the snapshot of the
transaction that counted the rows). Blobs are immutable and stored before any record names them,
so every blob the snapshot names is already on disk when the files are copied after it; blobs
written later come along as extras (``oikyo workspace check`` calls them orphans), never missing.
Each blob is hashed while it is copied and checked against the sha256 in its name. Caches that can
be rebuilt (``cache/``, ``tmp/``, ``kernels/``) and unfinished writes (``.tmp-*``) are left out.
Everything is written under a temporary name beside the destination and renamed at the end, so a
crashed backup never looks complete.

Restore verifies the whole backup first (the manifest, every file's sha256, every blob against its
name), so a damaged backup replaces nothing. Then it loads the database (a SQLite file, or
pg_restore into ``OIKYO_DATABASE_URL``), swaps the files in (staged inside the target workspace,
then renamed), runs the migrations (newer code, older backup), and points recorded paths under the
old workspace at the new one.

Usage::

    manifest = backup.backup(Path("/backups/oikyo-2026-12-06"))
    summary = backup.restore(Path("/backups/oikyo-2026-12-06"), into=Path("/srv/oikyo"), force=False)
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import create_engine, func, inspect, select, table, text
from sqlalchemy.engine import Connection, make_url

from oikyo import __version__, workspace
from oikyo.errors import OikyoError
from oikyo.store import artifacts, db

FORMAT = 1
MANIFEST = "backup.json"
SQLITE_FILE = "oikyo.db"
PG_FILE = "database.dump"
BACKED_UP = ("artifacts", "runs", "models")
SKIPPED = ("cache", "tmp", "kernels")
# Columns holding absolute paths inside the workspace, rewritten when a backup lands in another one.
PATH_COLUMNS = (("runs", "run_dir"), ("checkpoints", "path"), ("model_versions", "path"), ("base_models", "path"))

Progress = Callable[[int, int], None]
"""Called as ``progress(done_bytes, total_bytes)`` while files are copied or hashed."""


# --- helpers -----------------------------------------------------------------------------------

def _copy_hashed(src: Path, dst: Path, on_chunk: Callable[[int], None]) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` hashing the bytes as they pass; returns (size, sha256)."""
    digest, size = hashlib.sha256(), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(artifacts.CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
            on_chunk(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    return size, digest.hexdigest()


def _hash(path: Path, on_chunk: Callable[[int], None]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(artifacts.CHUNK):
            digest.update(chunk)
            size += len(chunk)
            on_chunk(len(chunk))
    return size, digest.hexdigest()


def _blob_digest(rel: str) -> str | None:
    """The sha256 a workspace-relative blob path names (``artifacts/sha256/ab/...``), else None."""
    if not rel.startswith("artifacts/"):
        return None
    try:
        return artifacts.digest_of(rel[len("artifacts/"):])
    except ValueError:
        return None


def _counter(progress: Progress | None, total: int) -> Callable[[int], None]:
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)
    return advance


def _walk(home: Path) -> Iterator[tuple[str, Path]]:
    """(workspace-relative name, path) of every file and symlink to back up, in a stable order."""
    for top in BACKED_UP:
        root = home / top
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            links = [d for d in dirnames if (here / d).is_symlink()]
            dirnames[:] = sorted(d for d in dirnames if d not in links and not d.startswith(".tmp-"))
            for name in sorted(filenames + links):
                if not name.startswith(".tmp-"):
                    yield (here / name).relative_to(home).as_posix(), here / name


def _safe(root: Path, rel: str) -> Path:
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise OikyoError(f"backup manifest names an unsafe path {rel!r}")
    return root / rel


def find_pg_tool(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: on PATH, else the newest in /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not candidates:
        raise OikyoError(f"{name} was not found on PATH nor in /usr/lib/postgresql/*/bin: install the PostgreSQL "
                         "client tools (e.g. apt install postgresql-client), of the server's major version or newer")
    return candidates[-1]


def _libpq(url: str) -> tuple[str, dict]:
    """A SQLAlchemy PostgreSQL URL as (libpq URL without the password, environment with PGPASSWORD)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)  # not on the command line, where `ps` would show it
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run_tool(cmd: list[str], env: dict) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise OikyoError(f"{Path(cmd[0]).name} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


def _describe(conn: Connection) -> tuple[str | None, dict[str, int]]:
    """(schema revision, rows per table) as ``conn`` sees the database."""
    names = sorted(inspect(conn).get_table_names())
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if "alembic_version" in names else None
    counts = {name: conn.execute(select(func.count()).select_from(table(name))).scalar_one() for name in names}
    return revision, counts


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database)


def _target_url(home: Path) -> str:
    return os.environ.get("OIKYO_DATABASE_URL") or f"sqlite:///{home / SQLITE_FILE}"


# --- backup ------------------------------------------------------------------------------------

def _dump_sqlite(url: str, staging: Path) -> dict:
    out = staging / SQLITE_FILE
    source = sqlite3.connect(_sqlite_path(url), timeout=30)
    target = sqlite3.connect(out)
    try:
        source.backup(target)  # all pages in one step: one read transaction, one point in time
        target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
    finally:
        target.close()
        source.close()
    engine = create_engine(f"sqlite:///{out}")
    try:
        with engine.connect() as conn:
            revision, counts = _describe(conn)
    finally:
        engine.dispose()
    return {"dialect": "sqlite", "file": SQLITE_FILE, "revision": revision, "tables": counts}


def _dump_postgres(url: str, staging: Path) -> dict:
    tool = find_pg_tool("pg_dump")
    libpq, env = _libpq(url)
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            # The rows counted here and the rows pg_dump writes come from one exported snapshot.
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            revision, counts = _describe(conn)
            _run_tool([tool, "--format=custom", f"--snapshot={snapshot}", f"--file={staging / PG_FILE}",
                       f"--dbname={libpq}"], env)
    finally:
        engine.dispose()
    return {"dialect": "postgresql", "file": PG_FILE, "revision": revision, "tables": counts}


def _size(path: Path) -> int:
    try:
        return 0 if path.is_symlink() else path.stat().st_size
    except FileNotFoundError:
        return 0


def _copy_files(home: Path, staging: Path, progress: Progress | None) -> tuple[dict, list[str]]:
    """Copy the workspace's files into ``staging``; returns (manifest entries, corrupted blobs left out).

    A file deleted while the backup runs (a checkpoint pruned by a training run) is left out.
    """
    found = list(_walk(home))
    advance = _counter(progress, sum(_size(path) for _, path in found))
    files, corrupted = {}, []
    for rel, path in found:
        dest = staging / rel
        try:
            if path.is_symlink():
                target = os.readlink(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, dest)
                files[rel] = {"link": target}
                continue
            size, digest = _copy_hashed(path, dest, advance)
        except FileNotFoundError:
            dest.unlink(missing_ok=True)
            continue
        expected = _blob_digest(rel)
        if expected is not None and digest != expected:
            dest.unlink()
            corrupted.append(rel)
            continue
        files[rel] = {"size": size, "sha256": digest}
    return files, corrupted


def backup(dest: Path, *, progress: Progress | None = None) -> dict:
    """Back the current workspace and database up into the new folder ``dest``; returns the manifest.

    Blobs whose bytes do not match their name are left out and listed under ``corrupted``.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists():
        raise OikyoError(f"{dest} already exists: give a new folder for the backup")
    if not dest.parent.is_dir():
        raise OikyoError(f"{dest.parent} is not a folder")
    home = workspace.home().resolve()
    if any(dest.resolve().is_relative_to(home / top) for top in BACKED_UP):
        raise OikyoError(f"{dest} is inside the workspace's {', '.join(BACKED_UP)} folders: back up to another place")
    url = workspace.database_url()
    db.engine()  # the live database exists and is at the newest schema
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        database = _dump_sqlite(url, staging) if make_url(url).get_backend_name() == "sqlite" else _dump_postgres(url, staging)
        database["size"], database["sha256"] = _hash(staging / database["file"], lambda n: None)
        files, corrupted = _copy_files(home, staging, progress)
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "oikyo_version": __version__,
            "home": str(home),
            "database": database,
            "files": files,
            "skipped": [f"{name}/" for name in SKIPPED],
            "corrupted": corrupted,
            "artifacts_url": artifacts.remote_url(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


# --- restore -----------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict:
    path = Path(src) / MANIFEST
    if not path.is_file():
        raise OikyoError(f"{src} is not an oikyo backup (no {MANIFEST}; an unfinished backup has none)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise OikyoError(f"{path} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict) or "database" not in manifest:
        raise OikyoError(f"{path} is not a backup manifest of format {FORMAT}")
    return manifest


def verify(src: Path, *, progress: Progress | None = None) -> dict:
    """The manifest of the backup at ``src`` once every file in it is checked; raises listing what is wrong."""
    src = Path(src)
    manifest = read_manifest(src)
    entries = {manifest["database"]["file"]: manifest["database"], **manifest["files"]}
    advance = _counter(progress, sum(e.get("size", 0) for e in entries.values()))
    bad = []
    for rel, entry in entries.items():
        path = _safe(src, rel)
        if "link" in entry:
            if not path.is_symlink():
                bad.append(f"{rel}: the link is missing")
            continue
        if not path.is_file():
            bad.append(f"{rel}: missing")
            continue
        size, digest = _hash(path, advance)
        if (size, digest) != (entry.get("size"), entry.get("sha256")):
            bad.append(f"{rel}: sha256 {digest[:16]}... and {size} bytes, the manifest says {str(entry.get('sha256'))[:16]}...")
        elif _blob_digest(rel) not in (None, digest):
            bad.append(f"{rel}: its content does not match the sha256 in its name")
    if bad:
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise OikyoError(f"backup {src} is damaged; nothing was restored:\n  " + "\n  ".join(bad[:20]) + more)
    return manifest


def _check_revision(revision: str | None) -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(db.MIGRATIONS_DIR))
    known = {script.revision for script in scripts.walk_revisions()}
    if revision is not None and revision not in known:
        raise OikyoError(f"the backup's schema revision {revision!r} is unknown to this oikyo ({__version__}): "
                         "it was made by a newer version; upgrade oikyo, then restore")


def _in_use(home: Path, url: str) -> list[str]:
    """What already lives in the target workspace and database (empty when restoring replaces nothing)."""
    found = [f"{top}/" for top in BACKED_UP if (home / top).is_dir() and any(p.is_file() for p in (home / top).rglob("*"))]
    if make_url(url).get_backend_name() == "sqlite" and not _sqlite_path(url).exists():
        return found
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _, counts = _describe(conn)
    finally:
        engine.dispose()
    rows = sum(n for name, n in counts.items() if name != "alembic_version")
    if rows:
        found.append(f"the database: {rows} rows")
    return found


def _pg_restore(dump: Path, url: str, clean: bool) -> None:
    tool = find_pg_tool("pg_restore")
    libpq, env = _libpq(url)
    cmd = [tool, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", f"--dbname={libpq}"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    _run_tool([*cmd, str(dump)], env)


def _stage_files(src: Path, manifest: dict, staging: Path, progress: Progress | None) -> None:
    total = sum(e.get("size", 0) for e in manifest["files"].values())
    advance = _counter(progress, total)
    for rel, entry in manifest["files"].items():
        dest = _safe(staging, rel)
        if "link" in entry:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(entry["link"], dest)
        else:
            _copy_hashed(src / rel, dest, advance)


def _rewrite_paths(conn: Connection, old_home: str, new_home: str) -> int:
    """Point absolute paths recorded under ``old_home`` at the same place under ``new_home``."""
    old, new = old_home.rstrip("/") + "/", new_home.rstrip("/") + "/"
    changed = 0
    for table_name, column in PATH_COLUMNS:
        result = conn.execute(text(f"UPDATE {table_name} SET {column} = :new || substr({column}, :start) "
                                   f"WHERE substr({column}, 1, :length) = :old"),
                              {"new": new, "start": len(old) + 1, "length": len(old), "old": old})
        changed += result.rowcount or 0
    return changed


def restore(src: Path, *, into: Path | None = None, force: bool = False, progress: Progress | None = None) -> dict:
    """Restore the backup at ``src`` into the workspace ``into`` (default: the current one); returns a summary.

    Refuses a non-empty workspace or database unless ``force``; checks the whole backup before
    anything is replaced; migrates the restored database to this version's schema.
    """
    src = Path(src).expanduser().absolute()
    manifest = verify(src, progress=progress)
    database = manifest["database"]
    _check_revision(database.get("revision"))
    home = (Path(into).expanduser() if into else workspace.home()).absolute()
    home.mkdir(parents=True, exist_ok=True)
    home = home.resolve()
    url = _target_url(home)
    target_dialect = make_url(url).get_backend_name()
    if target_dialect != database["dialect"]:
        raise OikyoError(f"the backup holds a {database['dialect']} database but the target is {target_dialect} "
                         f"({'OIKYO_DATABASE_URL' if os.environ.get('OIKYO_DATABASE_URL') else 'the workspace SQLite file'})")
    in_use = _in_use(home, url)
    if in_use and not force:
        raise OikyoError(f"{home} is not empty ({', '.join(in_use)}): restore into an empty workspace "
                         "(--into a new folder) or add --force to replace what is there")
    db.reset_engine()  # this process lets go of the database it is about to replace
    scratch = home / "tmp"
    scratch.mkdir(exist_ok=True)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    staging, replaced = scratch / f"restore-{tag}", scratch / f"replaced-{tag}"
    staging.mkdir()
    try:
        _stage_files(src, manifest, staging, progress)
        if target_dialect == "sqlite":
            shutil.copyfile(src / SQLITE_FILE, staging / SQLITE_FILE)
        else:  # the database first: when pg_restore fails, the workspace's files are still untouched
            _pg_restore(src / PG_FILE, url, clean=force)
        replaced.mkdir()
        moving = list(BACKED_UP) + ([SQLITE_FILE, f"{SQLITE_FILE}-wal", f"{SQLITE_FILE}-shm"]
                                    if target_dialect == "sqlite" else [])
        for name in moving:
            if (home / name).exists():
                os.replace(home / name, replaced / name)
            if (staging / name).exists():
                os.replace(staging / name, home / name)
        shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _after_restore(manifest, home, url)


def _after_restore(manifest: dict, home: Path, url: str) -> dict:
    """Migrate the restored database and move its recorded paths to ``home``; returns the summary."""
    engine = create_engine(url)
    try:
        db.migrate(engine)
        with engine.begin() as conn:
            rewritten = _rewrite_paths(conn, manifest["home"], str(home)) if manifest["home"] != str(home) else 0
            revision, counts = _describe(conn)
    finally:
        engine.dispose()
    return {"home": str(home), "database": manifest["database"]["dialect"], "files": len(manifest["files"]),
            "bytes": sum(e.get("size", 0) for e in manifest["files"].values()),
            "revision_backed_up": manifest["database"].get("revision"), "revision_now": revision,
            "paths_rewritten": rewritten, "tables": counts}
