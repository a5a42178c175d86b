"""The worker: claims queued runs one at a time and trains them, until stopped.

Start as many as the machine (or cluster) can feed; they share the queue safely through leases::

    oikyo worker                      # runs jobs until Ctrl-C / SIGTERM
    oikyo worker --once               # processes what is queued, then exits
    python -m oikyo.jobs.worker       # the same, without the CLI (what `oikyo train` auto-starts)

The first SIGINT/SIGTERM asks the current run to save a checkpoint and stop; the run goes back
to the queue and the next worker resumes it. A worker killed outright (SIGKILL, power loss) stops
heart-beating; once its lease expires another worker takes the run over.

Timing knobs (also from the environment, for auto-started workers): ``OIKYO_WORKER_LEASE_S``
(default 60), ``OIKYO_WORKER_HEARTBEAT_S`` (default 5), ``OIKYO_WORKER_POLL_S`` (default 1).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import threading
import time

from oikyo.jobs import execution, queue

logger = logging.getLogger("oikyo.jobs")

SEEN_EVERY_S = 5.0  # how often an idle worker records that it is alive


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def default_lease_s() -> float:
    return _env_float("OIKYO_WORKER_LEASE_S", 60.0)


def default_heartbeat_s() -> float:
    return _env_float("OIKYO_WORKER_HEARTBEAT_S", 5.0)


def default_poll_s() -> float:
    return _env_float("OIKYO_WORKER_POLL_S", 1.0)


class Worker:
    """One job at a time: claim, train with heartbeats, record the end, repeat."""

    def __init__(self, *, owner: str | None = None, lease_s: float | None = None,
                 heartbeat_s: float | None = None, poll_s: float | None = None,
                 idle_exit_s: float | None = None, executor=None):
        # executor: how a claimed run is executed (default: in this process; see ray_executor.RayExecutor).
        self.executor = executor
        self.owner = owner or queue.new_owner()
        self.lease_s = lease_s or default_lease_s()
        self.heartbeat_s = heartbeat_s or default_heartbeat_s()
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError("the heartbeat interval must be at most half the lease, or leases lapse while training")
        self.poll_s = poll_s or default_poll_s()
        self.idle_exit_s = idle_exit_s
        self.shutdown = threading.Event()
        self.processed: list[tuple[str, str]] = []  # (run id, how it ended)
        self._last_seen = 0.0

    def _seen_idle(self) -> None:
        # An idle worker tells the store it is alive every few seconds (not every poll).
        if time.monotonic() - self._last_seen >= SEEN_EVERY_S:
            queue.worker_seen(self.owner, "idle")
            self._last_seen = time.monotonic()

    def stop(self) -> None:
        """Ask the worker to stop: the current run checkpoints and goes back to the queue."""
        self.shutdown.set()

    def run_one(self) -> tuple[str, str] | None:
        """Claim and train one run; None when nothing was claimable."""
        run = queue.claim(self.owner, self.lease_s)
        if run is None:
            return None
        logger.info("worker %s: training %s (%s), attempt %d", self.owner, run.id, run.name, run.attempts)
        queue.worker_seen(self.owner, "busy", run.id)
        execute = self.executor or execution.execute_claimed
        outcome = execute(run, self.owner, lease_s=self.lease_s, heartbeat_s=self.heartbeat_s, shutdown=self.shutdown)
        logger.info("worker %s: %s ended: %s", self.owner, run.id, outcome)
        self.processed.append((run.id, outcome))
        return run.id, outcome

    def run(self, once: bool = False) -> int:
        """Process runs until stopped (``once``: until nothing is claimable). Returns how many were processed."""
        logger.info("worker %s started (lease %.0fs, heartbeat %.1fs)", self.owner, self.lease_s, self.heartbeat_s)
        queue.forget_stopped_workers()
        idle_since = time.monotonic()
        count = 0
        try:
            while not self.shutdown.is_set():
                self._seen_idle()
                if self.run_one() is not None:
                    count += 1
                    idle_since = time.monotonic()
                    self._last_seen = 0.0
                    continue
                if once:
                    break
                if self.idle_exit_s is not None and time.monotonic() - idle_since >= self.idle_exit_s:
                    logger.info("worker %s: idle for %.0fs, exiting", self.owner, self.idle_exit_s)
                    break
                self.shutdown.wait(self.poll_s)
        finally:
            try:
                queue.worker_seen(self.owner, "stopped")
            except Exception as error:  # noqa: BLE001 - the database may be what failed
                logger.warning("could not record that worker %s stopped: %s", self.owner, error)
        logger.info("worker %s stopped after %d run(s)", self.owner, count)
        return count


def install_signal_handlers(worker: Worker) -> None:
    """First SIGINT/SIGTERM: stop gracefully (checkpoint, requeue). Second: stop at once."""

    def handler(signum, _frame):
        if worker.shutdown.is_set():
            raise KeyboardInterrupt
        logger.info("worker %s: signal %d, saving a checkpoint and stopping (again to stop at once)",
                    worker.owner, signum)
        worker.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m oikyo.jobs.worker``: the worker process (auto-started by ``oikyo train``)."""
    parser = argparse.ArgumentParser(prog="python -m oikyo.jobs.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--once", action="store_true", help="process the queue, then exit")
    parser.add_argument("--lease", type=float, default=None, help="lease length in seconds")
    parser.add_argument("--heartbeat", type=float, default=None, help="heartbeat interval in seconds")
    parser.add_argument("--poll", type=float, default=None, help="seconds between looks at an empty queue")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = Worker(lease_s=args.lease, heartbeat_s=args.heartbeat, poll_s=args.poll, idle_exit_s=args.idle_exit)
    install_signal_handlers(worker)
    worker.run(once=args.once)
    return 0


if __name__ == "__main__":
    code = main()
    # Leaving: skip the interpreter's final garbage collections over every object torch and transformers
    # made (seconds on a busy machine, for memory the process gives back anyway).
    gc.freeze()
    raise SystemExit(code)
