"""Shared test fixtures.

One autouse fixture gives every test its own empty workspace (``OIKYO_HOME``) and its own SQLite
database, so no test touches the user's home or sees another test's records.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh, empty OIKYO_HOME for each test."""
    home = tmp_path / "oikyo-home"
    monkeypatch.setenv("OIKYO_HOME", str(home))
    monkeypatch.delenv("OIKYO_DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from oikyo.store import db

    db.reset_engine()
    yield home
    db.reset_engine()


@pytest.fixture
def shared_datasets() -> Path:
    """The real sample files in ../shared/datasets (LLaMA-Factory's demo data)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url(monkeypatch):
    """A throwaway PostgreSQL database on the local server, set as OIKYO_DATABASE_URL.

    Skips, with the reason shown, only when no server is reachable.
    """
    import uuid

    from sqlalchemy import create_engine, text

    from oikyo.store import db

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any connection failure means "no server here"
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {error.__class__.__name__}")
    name = f"oikyo_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("OIKYO_DATABASE_URL", url)
    db.reset_engine()
    yield url
    db.reset_engine()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
