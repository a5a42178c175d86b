"""Folders (model versions: adapters, merged and full models) as content-addressed blobs plus a manifest.

A model version's folder lives on the machine that trained it. With a shared artifact store
(``OIKYO_ARTIFACTS_URL``) its files are uploaded as blobs (:mod:`oikyo.store.artifacts`), and a
small JSON manifest, itself a blob, maps each file's relative name to its key, size and sha256.
The manifest's key is recorded with the version (``lineage["manifest"]``). Another machine
materializes the folder from it into its cache (``<workspace>/cache/folders/<manifest digest>``),
each blob checked against its sha256 as it is fetched, the folder assembled under a temp name and
renamed into place, so a half-made folder is never seen. Files are hard links to the blob cache
where the filesystem allows (no second copy), else copies.

Usage::

    key = manifests.upload_folder(Path("runs/r-1/output"))   # -> "sha256/ab/....json"
    folder = manifests.materialize(key)                        # a local folder with the same files
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.store import artifacts

FORMAT = 1


def _suffix(name: str) -> str:
    """A file's suffix as a blob suffix (``.safetensors``), when it is a plain one."""
    suffix = Path(name).suffix
    return suffix if suffix[1:].isalnum() and len(suffix) <= 16 else ""


def upload_folder(folder: Path) -> str:
    """Store every file under ``folder`` and a manifest of them; returns the manifest's key."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OikyoError(f"no folder at {folder}")
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        key, digest = artifacts.put_copy(path, _suffix(name))
        files[name] = {"key": key, "size": path.stat().st_size, "sha256": digest}
    manifest = {"format": FORMAT, "files": files}
    return artifacts.put_bytes(json.dumps(manifest, indent=1, sort_keys=True).encode(), ".json")


def read(key: str) -> dict:
    """The manifest stored at ``key`` (fetched when missing here)."""
    manifest = json.loads(artifacts.path_of(key).read_text())
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise OikyoError(f"artifact {key} is not a folder manifest of format {FORMAT}")
    return manifest


def cache_dir(key: str) -> Path:
    """Where the folder of manifest ``key`` is (or would be) materialized on this machine."""
    return workspace.subdir("cache") / "folders" / artifacts.digest_of(key)


def link_or_copy(source: str | Path, dest: str | Path) -> None:
    """``dest`` as a hard link to ``source`` (no second copy of the bytes), else a copy (another filesystem)."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def materialize(key: str) -> Path:
    """The folder that manifest ``key`` describes, assembled in this machine's cache on first use."""
    target = cache_dir(key)
    if target.is_dir():
        return target
    manifest = read(key)
    staging = artifacts.temp_path()
    staging.mkdir(parents=True)
    try:
        for name, entry in manifest["files"].items():
            dest = staging / name
            if ".." in Path(name).parts or Path(name).is_absolute() or dest.resolve() == staging.resolve():
                raise OikyoError(f"manifest {key} names an unsafe file {name!r}")
            blob = artifacts.path_of(entry["key"])  # fetched and checked against its sha256 when missing
            if artifacts.digest_of(entry["key"]) != entry["sha256"] or blob.stat().st_size != entry["size"]:
                raise OikyoError(f"manifest {key}: {name} does not match its blob {entry['key']}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(blob, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():  # anything but "another process made it first" is an error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
