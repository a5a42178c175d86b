"""The store: migrations, SQLite WAL, the artifact store, and the same schema on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from oikyo.store import artifacts, db
from oikyo.store.models import DatasetVersion


def _version(n: int = 0) -> DatasetVersion:
    digest = f"{n:064x}"
    return DatasetVersion(id=digest[:12], content_hash=digest, name="demo", kind="text", rows=1,
                          artifact="sha256/00/x.parquet", lineage={"operation": "test"})


def test_fresh_workspace_is_migrated_to_head_in_wal_mode(workspace):
    engine = db.engine()
    assert (workspace / "oikyo.db").exists()
    assert "dataset_versions" in inspect(engine).get_table_names()
    with engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        applied = {row[0] for row in c.execute(text("SELECT version_num FROM alembic_version"))}
    assert applied == set(ScriptDirectory(str(db.MIGRATIONS_DIR)).get_heads())


def test_session_rolls_back_on_error():
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(_version(1))
            s.flush()
            raise RuntimeError("boom")
    with db.session() as s:
        assert s.scalars(select(DatasetVersion)).all() == []


def test_artifacts_are_content_addressed(tmp_path):
    key1 = artifacts.put_bytes(b"hello", ".txt")
    key2 = artifacts.put_bytes(b"hello", ".txt")
    assert key1 == key2 == "sha256/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824.txt"
    assert artifacts.path_of(key1).read_bytes() == b"hello"
    assert list((artifacts.path_of(key1).parent.parent.parent.parent / "tmp").iterdir()) == []
    for bad in ("../../etc/passwd", "/etc/passwd"):
        with pytest.raises(ValueError):
            artifacts.path_of(bad)


def test_reopening_an_existing_workspace_keeps_records():
    with db.session() as s:
        s.add(_version(2))
    db.reset_engine()
    with db.session() as s:
        assert [v.id for v in s.scalars(select(DatasetVersion))] == [f"{2:064x}"[:12]]


@pytest.mark.postgres
def test_postgresql_gets_the_same_schema_and_records(postgres_url):
    engine = db.engine()
    assert engine.dialect.name == "postgresql"
    assert "dataset_versions" in inspect(engine).get_table_names()
    with db.session() as s:
        s.add(_version(3))
    with pytest.raises(Exception):  # the content hash is unique on PostgreSQL too
        with db.session() as s:
            s.add(DatasetVersion(id="other", content_hash=f"{3:064x}", name="x", kind="text", rows=1,
                                 artifact="k", lineage={}))
    with db.session() as s:
        record = s.scalars(select(DatasetVersion)).one()
        assert record.lineage == {"operation": "test"} and record.created_at.tzinfo is not None


@pytest.mark.parametrize("url, reason", [
    ("postgresql+psycopg://oikyo:hunter2secret@127.0.0.1:1/oikyo", "Connection refused"),
    ("sqlite:////nonexistent-oikyo-dir/sub/oikyo.db", "unable to open database file"),
])
def test_an_unreachable_database_is_a_clear_error_without_its_password(monkeypatch, url, reason):
    from typer.testing import CliRunner

    from oikyo.cli.main import app

    monkeypatch.setenv("OIKYO_DATABASE_URL", url)
    db.reset_engine()
    with pytest.raises(db.DatabaseUnavailable) as raised:
        db.engine()
    assert reason in str(raised.value) and "OIKYO_DATABASE_URL" in str(raised.value)
    assert "hunter2secret" not in str(raised.value)
    assert db.DatabaseUnavailable.http_status == 503
    result = CliRunner().invoke(app, ["runs", "list"])
    assert result.exit_code == 2 and "cannot open the database" in result.output, result.output
    assert "Traceback" not in result.output and "hunter2secret" not in result.output


def test_the_recorded_head_revision_is_the_newest_migration():
    # db.HEAD_REVISION lets a current database open without importing Alembic; a new migration must move it.
    assert {db.HEAD_REVISION} == set(ScriptDirectory(str(db.MIGRATIONS_DIR)).get_heads())
