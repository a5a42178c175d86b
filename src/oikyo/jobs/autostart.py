"""Starting a background worker for local use, when none is serving the queue.

``oikyo train`` queues a run and then calls :func:`ensure_worker`: if a worker has reported itself
alive recently (it heart-beats into the ``workers`` table, idle or busy), or one this workspace
auto-started is still running, nothing happens; otherwise a detached ``python -m oikyo.jobs.worker``
is started in its own session (so closing the terminal does not stop it), writing its log to
``<workspace>/logs/worker-<time>.log``. An auto-started worker exits after some idle minutes.

Usage::

    from oikyo.jobs import autostart
    started = autostart.ensure_worker()   # a StartedWorker, or None when one is already serving
    more = autostart.ensure_workers(4)     # `oikyo tune --parallel 4`: start workers until 4 serve the queue
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from oikyo import workspace
from oikyo.jobs import queue, worker
from oikyo.processes import pid_alive

LIVE_WITHIN_S = 30.0  # a worker seen this recently counts as alive (it reports every few seconds)
IDLE_EXIT_S = 600.0  # an auto-started worker exits after this long with nothing to do
PIDFILE = "worker.pid"


@dataclass
class StartedWorker:
    pid: int
    log_path: Path


def autostarted_pid() -> int | None:
    """The pid of the worker this workspace auto-started, when it is still running."""
    path = workspace.subdir("logs") / PIDFILE
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def worker_alive() -> bool:
    """Whether some worker serves this queue: one seen recently in the store, or our auto-started one."""
    live_within = max(LIVE_WITHIN_S, worker.default_heartbeat_s() * 3)
    return bool(queue.live_workers(live_within)) or autostarted_pid() is not None


def spawn_worker(idle_exit_s: float = IDLE_EXIT_S) -> StartedWorker:
    """Start a detached worker process with its log in the workspace."""
    logs = workspace.subdir("logs")
    log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "oikyo.jobs.worker", "--idle-exit", str(idle_exit_s)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env=dict(os.environ),
        )
    (logs / PIDFILE).write_text(f"{process.pid}\n")
    return StartedWorker(pid=process.pid, log_path=log_path)


def ensure_worker(idle_exit_s: float = IDLE_EXIT_S) -> StartedWorker | None:
    """Start a background worker unless one is already serving the queue."""
    if worker_alive():
        return None
    return spawn_worker(idle_exit_s)


def ensure_workers(count: int, idle_exit_s: float = IDLE_EXIT_S) -> list[StartedWorker]:
    """Start background workers until ``count`` serve the queue (live ones in the store count; call once,
    since a worker just started is not in the store yet). Returns the workers started."""
    live_within = max(LIVE_WITHIN_S, worker.default_heartbeat_s() * 3)
    alive = len(queue.live_workers(live_within))
    if alive == 0 and autostarted_pid() is not None:
        alive = 1
    return [spawn_worker(idle_exit_s) for _ in range(max(0, count - alive))]
