"""A full or read-only disk as a clear error for the user, instead of a traceback.

The writers (dataset imports, exports, checkpoints) already write beside their target and rename
into place, so a failed write leaves the earlier state as it was; this module only words the
failure. The CLI words any such error that reaches it with :func:`describe`. Usage::

    from oikyo.store import disk
    with disk.errors("could not export support@1a2b", "nothing was written to out.jsonl"):
        ...  # an OSError ENOSPC / EDQUOT / EROFS, or SQLite's "disk is full" -> disk.DiskError
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

from oikyo.errors import OikyoError

REASONS = {
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
}
# What SQLite says (through SQLAlchemy) for the same conditions. Opening a WAL database on a full disk
# (no room for its -shm file) says only "disk I/O error": that is taken as full when the workspace's
# file system has no space left.
SQLITE_REASONS = {"database or disk is full": errno.ENOSPC, "readonly database": errno.EROFS}
SQLITE_IO_ERROR = "disk I/O error"


class DiskError(OikyoError):
    """A write failed because the disk is full or read-only; ``errno`` says which."""

    http_status = 507  # Insufficient Storage, through the REST API

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.errno = code


def reason_of(error: BaseException) -> int | None:
    """The errno of a full or read-only disk behind ``error``, or None for any other error.

    Besides an OSError's errno, the OS's own words count: libraries that wrap the error (safetensors,
    shutil.copytree's list of failures) keep only them.
    """
    if isinstance(error, OSError) and error.errno in REASONS:
        return error.errno
    for code in REASONS:
        if os.strerror(code) in str(error):
            return code
    text = str(getattr(error, "orig", "") or "")
    if type(error).__name__ == "OperationalError":
        for words, code in SQLITE_REASONS.items():
            if words in text:
                return code
        if SQLITE_IO_ERROR in text and _workspace_full():
            return errno.ENOSPC
    return None


def _workspace_full() -> bool:
    """Whether the file system holding the workspace has no free space left (less than 64 KiB)."""
    from oikyo import workspace

    try:
        stats = os.statvfs(workspace.home())
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 << 10


def describe(error: BaseException, outcome: str = "") -> str | None:
    """"<reason> (<file>)[; <outcome>]. <what to do>" for a full or read-only disk, else None."""
    code = reason_of(error)
    if code is None:
        return None
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    fix = "Make it writable" if code == errno.EROFS else "Free some space"
    return f"{REASONS[code]}{where}{'; ' + outcome if outcome else ''}. {fix} and try again"


@contextmanager
def errors(failed: str, outcome: str):
    """Raise :class:`DiskError` ("<failed>: <reason> (<file>); <outcome>. ...") for a full or read-only disk."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only disk conditions are translated; the rest re-raised
        message = describe(error, outcome)
        if message is None:
            raise
        raise DiskError(f"{failed}: {message}", reason_of(error)) from error
