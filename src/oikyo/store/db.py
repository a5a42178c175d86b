"""Database engine, sessions and schema migrations.

The store holds ids, states, paths and small JSON records; blobs live in the artifact store.
SQLite (WAL mode) in the workspace by default; any SQLAlchemy URL through ``OIKYO_DATABASE_URL``
(PostgreSQL at scale). The schema is created and upgraded by Alembic migrations the first time a
process opens the database, so a fresh workspace and an old one both end up at the newest schema.

Usage::

    from oikyo.store import db
    with db.session() as s:           # commits on success, rolls back on any exception
        s.add(record)
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from oikyo import workspace
from oikyo.errors import OikyoError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest migration's revision (tests/store/test_store.py checks it against the migrations folder).
# A database already there is opened without importing Alembic (about a third of a CLI command's start);
# any other revision, or a stale value here, takes the full Alembic path.
HEAD_REVISION = "0012_checkpoint_manifests"

_lock = threading.Lock()
_engine: Engine | None = None
_engine_url: str | None = None
_sessionmaker: sessionmaker | None = None


class DatabaseUnavailable(OikyoError):
    """The database could not be opened (a server that does not answer, a refused login, a bad path)."""

    http_status = 503


def _unavailable(url: str, error: Exception) -> DatabaseUnavailable:
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return DatabaseUnavailable(f"cannot open the database at {shown}: {reason} "
                               "(check OIKYO_DATABASE_URL, and that the server is running)")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the CLI, workers and servers read while one of them writes; busy_timeout makes a
    # writer wait for the lock instead of failing at once when several processes write.
    # busy_timeout comes first: switching a new file to WAL takes the lock other processes may hold.
    # 60 s: with 50 writers on 2 loaded cores one statement waited 21 s for the lock (RELIABILITY.md);
    # a slow write beats a "database is locked" reaching a user. Beyond that, use PostgreSQL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Bring the database at ``engine`` to the newest schema (append-only named migrations).

    A database already at the newest schema is only read. Otherwise, on SQLite, the upgrade runs in
    one ``BEGIN IMMEDIATE`` transaction: processes opening a new workspace at the same moment (a
    server, workers, the CLI) take turns, and those after the first find the schema current, instead
    of each creating the same tables ("table ... already exists").
    """
    with engine.connect() as connection:
        if _at_head(connection):
            return
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = set(ScriptDirectory.from_config(config).get_heads())

    def current(connection) -> bool:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads

    with engine.connect() as connection:
        if current(connection):
            return  # the common case, read without a write lock: many processes start at once
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            # pysqlite runs DDL outside transactions; this takes the write lock first (waiting up to busy_timeout).
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            if current(connection):
                return  # another process upgraded it while this one waited
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _at_head(connection) -> bool:
    """Whether the database records exactly :data:`HEAD_REVISION` (False for a new, empty database)."""
    try:
        versions = [row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")]
    except exc.DBAPIError:
        connection.rollback()  # no alembic_version table yet (PostgreSQL aborts the transaction)
        return False
    return versions == [HEAD_REVISION]


def engine() -> Engine:
    """The process-wide engine for the current workspace, migrated on first use."""
    global _engine, _engine_url, _sessionmaker
    url = workspace.database_url()
    with _lock:
        if _engine is not None and _engine_url == url:
            return _engine
        if _engine is not None:
            _engine.dispose()
        new = create_engine(url, future=True, pool_pre_ping=True)
        if new.dialect.name == "sqlite":
            event.listen(new, "connect", _sqlite_pragmas)
        try:
            migrate(new)
        except (exc.OperationalError, exc.InterfaceError) as error:
            new.dispose()
            from oikyo.store import disk

            if disk.reason_of(error) is not None:
                raise  # a full or read-only disk: the CLI and the API word it as such
            raise _unavailable(url, error) from error
        _engine, _engine_url = new, url
        _sessionmaker = sessionmaker(bind=new, expire_on_commit=False)
        return new


def reset_engine() -> None:
    """Forget the engine (tests switch workspaces; worker processes start clean after fork)."""
    global _engine, _engine_url, _sessionmaker
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = _engine_url = _sessionmaker = None


@contextmanager
def session() -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back on any exception."""
    engine()
    assert _sessionmaker is not None
    s = _sessionmaker()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def by_id_prefix(model, ref: str, *, id_prefix: str, noun: str, list_hint: str):
    """The ``model`` row whose id is ``ref`` or starts with it (``id_prefix`` such as ``run-`` may be
    left out); an :class:`~oikyo.errors.OikyoError` naming ``list_hint`` when none or several match."""
    from sqlalchemy import select

    from oikyo.errors import OikyoError

    ref = ref.strip()
    prefix = ref if ref.startswith(id_prefix) else f"{id_prefix}{ref}"
    # LIKE wildcards in a user's ref must match themselves, not anything.
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    with session() as s:
        found = list(s.scalars(select(model).where(model.id.like(escaped + "%", escape="\\")).limit(6)))
    exact = [row for row in found if row.id == prefix]
    if exact:
        return exact[0]
    if not found:
        raise OikyoError(f"no {noun} matches {ref!r}; `{list_hint}` lists them")
    if len(found) > 1:
        raise OikyoError(f"{ref!r} matches several {noun}s ({', '.join(row.id for row in found)}); give more of the id")
    return found[0]
