"""Content-addressed artifact store: ``artifacts/sha256/<2 hex>/<62 hex>[.suffix]`` in the workspace,
optionally backed by a shared store at any fsspec URL (``OIKYO_ARTIFACTS_URL=s3://bucket/prefix``).

Local (the default, ``OIKYO_ARTIFACTS_URL`` unset): files are written elsewhere first
(``workspace.subdir("tmp")``, same filesystem), then moved into place with an atomic rename, so a
reader never sees half a blob. The same bytes always land at the same key, so storing twice costs
nothing.

Shared (``OIKYO_ARTIFACTS_URL`` set): the blob goes to ``<url>/sha256/<2>/<62>[.suffix]`` too, and the
workspace's ``artifacts/`` folder becomes this machine's read cache, laid out as before, so readers
still open local files (Parquet, safetensors, JSON) through :func:`path_of`, which fetches a missing
blob once. Why the commits stay atomic:

- an object store (S3, GCS, Azure) makes a whole-object PUT visible all at once or not at all, and
  the key is the content's sha256: two writers of one key write the same bytes, so the blob is PUT
  straight to its key (no temp key and copy, which would cost a second request for nothing);
- any other fsspec filesystem (a mounted share, ``file://``) gets a temp name beside the key first,
  then a rename;
- a fetched blob is checked against the sha256 in its key before it is renamed into the cache, so
  a cache file is always whole and right (it never needs checking again).

S3 credentials and endpoint come from the usual places (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an S3-compatible server, ``~/.aws``), read by
s3fs (``pip install 'oikyo[s3]'``). Usage::

    key = artifacts.put(path, ".parquet")   # moves the file in; uploads it when the store is shared
    local = artifacts.path_of(key)          # a local file, fetched into the cache when missing
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

from oikyo import workspace
from oikyo.errors import OikyoError

CHUNK = 1 << 20
URL_ENV = "OIKYO_ARTIFACTS_URL"
# Object stores whose PUT of a whole object is atomic: blobs go straight to their content key.
ATOMIC_PUT_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "abfs", "az", "oss"}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remote_url() -> str | None:
    """The shared store's URL (``OIKYO_ARTIFACTS_URL``), or None when artifacts stay in the workspace."""
    url = (os.environ.get(URL_ENV) or "").strip()
    return url.rstrip("/") or None


def is_remote() -> bool:
    """Whether blobs are also kept in a shared store (``OIKYO_ARTIFACTS_URL``)."""
    return remote_url() is not None


@functools.lru_cache(maxsize=4)
def _filesystem(url: str):
    """(fsspec filesystem, root path inside it) for ``url``."""
    try:
        import fsspec
    except ImportError as error:  # pragma: no cover - fsspec comes with the core dependencies
        raise OikyoError(f"{URL_ENV}={url} needs fsspec: pip install 'oikyo[s3]'") from error
    try:
        # skip_instance_cache: fsspec would otherwise hand back an instance made earlier in this
        # process for the same URL, with the credentials and endpoint (AWS_ENDPOINT_URL, ...) the
        # environment had then. This function's own cache is cleared when those change.
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as error:
        raise OikyoError(f"{URL_ENV}={url} needs a filesystem driver that is not installed ({error}); "
                         "for s3:// run pip install 'oikyo[s3]'") from error
    return fs, root.rstrip("/")


def _remote(key: str) -> tuple[object, str]:
    fs, root = _filesystem(remote_url())
    return fs, f"{root}/{key}"


def _check_key(key: str) -> None:
    if ".." in Path(key).parts or Path(key).is_absolute():
        raise ValueError(f"invalid artifact key: {key!r}")


def digest_of(key: str) -> str:
    """The sha256 a key names (``sha256/ab/cdef....parquet`` -> ``abcdef...``)."""
    _check_key(key)
    if not key.startswith("sha256/") or key.count("/") != 2:
        raise ValueError(f"invalid artifact key: {key!r}")
    _, head, tail = key.split("/", 2)
    return head + tail[:62]


def key_for(digest: str, suffix: str = "") -> str:
    return f"sha256/{digest[:2]}/{digest[2:]}{suffix}"


def cache_path(key: str) -> Path:
    """Where a blob lies (or would lie) in this workspace, without fetching it.

    A blob or folder of the store that is a symlink leading out of it (planted by someone) raises
    OikyoError: the store never reads or writes through it.
    """
    _check_key(key)
    root = workspace.subdir("artifacts")
    target = root / key
    if not target.resolve().is_relative_to(root.resolve()):
        raise OikyoError(f"artifact {key} leads outside the artifact store {root} (a symlink?); refusing to use it")
    return target


def path_of(key: str) -> Path:
    """Absolute local path of a stored artifact from its key (``sha256/ab/cdef...``).

    With a shared store, a blob missing here is fetched into the cache first (checked against its
    sha256); a key that neither holds raises :class:`OikyoError`.
    """
    target = cache_path(key)
    if target.exists() or not is_remote():
        return target
    fs, remote = _remote(key)
    tmp = temp_path(target.suffix)
    try:
        fs.get_file(remote, str(tmp))
    except FileNotFoundError:
        raise OikyoError(f"artifact {key} is neither in this workspace nor in {remote_url()}") from None
    got = file_sha256(tmp)
    if got != digest_of(key):
        tmp.unlink(missing_ok=True)
        raise OikyoError(f"artifact {key} fetched from {remote_url()} has sha256 {got}: the stored blob is damaged")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    return target


def upload(path: Path, key: str) -> None:
    """Put the local file ``path`` (whose sha256 ``key`` names) into the shared store, once."""
    fs, remote = _remote(key)
    if fs.exists(remote):  # same key, same bytes: nothing to do
        return
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & ATOMIC_PUT_PROTOCOLS:
        fs.put_file(str(path), remote)
        return
    fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
    staged = f"{remote}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fs.put_file(str(path), staged)
    fs.mv(staged, remote)


def put(path: Path, suffix: str = "") -> str:
    """Move the file at ``path`` into the store; returns its key. ``path`` is gone afterwards."""
    key = key_for(file_sha256(path), suffix)
    if is_remote():
        upload(path, key)  # shared first: a key recorded in the database is then readable everywhere
    target = cache_path(key)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.unlink(path)
    else:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, target)
    return key


def put_copy(path: Path, suffix: str = "") -> tuple[str, str]:
    """Store a copy of the file at ``path`` (left in place); returns (key, sha256).

    With a shared store only the upload is made (the file is already on this machine); locally the
    copy lands in the workspace's store.
    """
    digest = file_sha256(path)
    key = key_for(digest, suffix)
    if is_remote():
        upload(path, key)
    elif not cache_path(key).exists():
        tmp = temp_path(suffix)
        shutil.copyfile(path, tmp)
        _put_scratch(tmp, suffix)
    return key, digest


def put_bytes(data: bytes, suffix: str = "") -> str:
    """Store bytes; returns their key."""
    tmp = temp_path(suffix)
    tmp.write_bytes(data)
    return _put_scratch(tmp, suffix)


def _put_scratch(tmp: Path, suffix: str) -> str:
    """:func:`put` of a scratch file of ours, which is removed also when storing it fails."""
    try:
        return put(tmp, suffix)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_path(suffix: str = "") -> Path:
    """A fresh scratch file name on the workspace's filesystem (not created)."""
    return workspace.subdir("tmp") / f"{os.getpid()}-{os.urandom(8).hex()}{suffix}"
