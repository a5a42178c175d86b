"""Whether a process of this machine still runs (for pid files, leases and supervisors).

    pid_alive(1234)   # False once it exited, even as a zombie child not yet reaped
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers signal 0; /proc tells them apart on Linux.
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        try:
            return "\nState:\tZ" not in status.read_text()
        except OSError:
            return True
    return True
