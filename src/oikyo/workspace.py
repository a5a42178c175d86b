"""Where oikyo keeps its state on disk.

The workspace root is ``OIKYO_HOME`` (default ``~/.oikyo``)::

    oikyo.db              SQLite in WAL mode (or any SQLAlchemy URL via OIKYO_DATABASE_URL)
    artifacts/sha256/..   content-addressed blobs (datasets as Parquet, exported files); with a shared
                          store (OIKYO_ARTIFACTS_URL, see oikyo.store.artifacts) this machine's cache of it
    cache/folders/        model version folders materialized from the shared store (oikyo.store.manifests)
    runs/<run-id>/        checkpoints, logs, resolved config
    models/               converted base models, adapters, merged exports
    kernels/              small native kernels compiled on first use for this machine (serving)
    tmp/                  scratch space on the same filesystem, so finished files can be renamed into place

Everything reads the paths through :func:`home` at call time, so tests (and users) can point
``OIKYO_HOME`` elsewhere without re-importing anything.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The workspace root, created on first use."""
    root = Path(os.environ.get("OIKYO_HOME") or Path.home() / ".oikyo").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    """A named folder inside the workspace (``artifacts``, ``runs``, ``models``, ``tmp``), created on use."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """``OIKYO_DATABASE_URL`` if set, else the workspace's SQLite file."""
    return os.environ.get("OIKYO_DATABASE_URL") or f"sqlite:///{home() / 'oikyo.db'}"
