"""Content-addressed artifact store: ``artifacts/sha256/<2 hex>/<62 hex>[.suffix]`` in the workspace.

Files are written elsewhere first (``workspace.subdir("tmp")``, same filesystem), then moved into
place with an atomic rename, so a reader never sees half a blob. The same bytes always land at the
same key, so storing twice costs nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from oikyo import workspace

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_of(key: str) -> Path:
    """Absolute path of a stored artifact from its key (``sha256/ab/cdef...``)."""
    if ".." in Path(key).parts or Path(key).is_absolute():
        raise ValueError(f"invalid artifact key: {key!r}")
    return workspace.subdir("artifacts") / key


def put(path: Path, suffix: str = "") -> str:
    """Move the file at ``path`` into the store; returns its key. ``path`` is gone afterwards."""
    digest = file_sha256(path)
    key = f"sha256/{digest[:2]}/{digest[2:]}{suffix}"
    target = path_of(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.unlink(path)
    else:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, target)
    return key


def put_bytes(data: bytes, suffix: str = "") -> str:
    """Store bytes; returns their key."""
    tmp = temp_path(suffix)
    tmp.write_bytes(data)
    return put(tmp, suffix)


def temp_path(suffix: str = "") -> Path:
    """A fresh scratch file name on the workspace's filesystem (not created)."""
    return workspace.subdir("tmp") / f"{os.getpid()}-{os.urandom(8).hex()}{suffix}"
