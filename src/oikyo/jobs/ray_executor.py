"""The Ray executor: the worker claims runs from the SQL queue and trains each one on a Ray cluster.

``oikyo worker --executor ray --address HOST:PORT`` claims runs exactly as the local worker does (the
queue stays the source of truth for states, leases, events and metrics); only the training itself
moves:

- a one-process run becomes one Ray task that runs the ordinary execution of that run
  (:func:`oikyo.jobs.execution._execute`) on a node of the cluster, writing its log, checkpoints and
  metrics to the shared store like a local worker would;
- a multi-process run (``train.nproc`` > 1) is executed by the worker itself, and its ``nproc``
  processes are Ray Train workers (``TorchTrainer``) that Ray places across the cluster's nodes
  (:mod:`oikyo.train.ray_launch`; the run folder must then be on storage every node sees).

For a task, meanwhile, the worker:

- heart-beats the lease and records checkpoints as they appear (the same :class:`Heartbeat`),
- relays cancellation (the run's ``cancel_requested``, or the worker shutting down) by cancelling
  the Ray task: Ray interrupts the task, whose SIGINT handler asks the recipe to save a checkpoint
  and stop; a task still running after ``CANCEL_GRACE_S`` is killed (``force=True``),
- records the end: what the task returned or raised, as :func:`execution.execute_claimed` does.
  When the process running the task dies (SIGKILL, OOM, a lost node) the run goes back to the queue
  and the next attempt resumes from the last complete checkpoint, as after a killed local worker;
  such crashes count towards the run's ``max_attempts`` and the run fails after the last one.

Usage::

    ray start --head --port 6380 --num-cpus 2 --include-dashboard false
    oikyo worker --executor ray --address 127.0.0.1:6380

Every node needs the same oikyo install and the same store (``OIKYO_DATABASE_URL``, and
``OIKYO_HOME`` or ``OIKYO_ARTIFACTS_URL``): the task gets the worker's ``OIKYO_*`` variables.
Evaluation jobs run in the worker's own process. Ray is the optional extra ``oikyo[ray]``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from oikyo.errors import OikyoError
from oikyo.jobs import checkpoints, execution, queue
from oikyo.store.models import Run

logger = logging.getLogger("oikyo.jobs")

CANCEL_GRACE_S = 60.0  # how long a cancelled task may take to checkpoint before it is killed
FORWARDED_PREFIXES = ("OIKYO_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def task_env() -> dict[str, str]:
    """The worker's environment a Ray task needs to reach the same store (OIKYO_*) and stay offline."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


def run_attempt(run_id: str) -> object:
    """The body of the Ray task: one attempt of a claimed run, on whichever node Ray chose.

    Returns the recipe's result or raises what it raises; the worker records the end. ``ray.cancel``
    interrupts this task with SIGINT: the handler asks the recipe to checkpoint and stop.
    """
    import signal
    import socket

    from oikyo.store import db

    db.reset_engine()  # a reused Ray worker process: connect to this task's store
    run = queue.get(run_id)
    run.run_dir = str(execution.run_folder(run))  # this node's folder for the run (see run_folder)
    run_dir = Path(run.run_dir)
    log = execution.RunLog(run_dir / "train.log")
    cancel = threading.Event()

    def on_cancel(_signum, _frame):
        if not cancel.is_set():
            log.write("the Ray task was cancelled: saving a checkpoint and stopping")
        cancel.set()

    previous = signal.signal(signal.SIGINT, on_cancel)
    log.write(f"Ray task on {socket.gethostname()}, pid {os.getpid()}, runs attempt {run.attempts} of {run.id}")
    try:
        with execution.metrics_for(run, run_dir, log) as writer:
            return execution._execute(run, on_metrics=writer.add, should_stop=cancel.is_set, log=log.write)
    finally:
        signal.signal(signal.SIGINT, previous)
        log.close()


def _nproc(run: Run) -> int:
    return int(((run.config or {}).get("train") or {}).get("nproc") or 1)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a readable message: ``ray.init`` retries an unreachable address for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except ValueError as error:
        raise OikyoError(f"--address must be HOST:PORT, got {address!r}") from error
    except OSError as error:
        raise OikyoError(f"no Ray cluster answers at {address} ({error}); start one with "
                         f"`ray start --head --port PORT` and pass its HOST:PORT") from error


class RayExecutor:
    """Runs a claimed run's execution as a Ray task; called by the worker instead of ``execute_claimed``."""

    def __init__(self, address: str, *, num_cpus: float = 1, cancel_grace_s: float = CANCEL_GRACE_S):
        try:
            import ray
        except ImportError as error:
            raise OikyoError("the Ray executor needs Ray: pip install 'oikyo[ray]'") from error
        self.address, self.num_cpus, self.cancel_grace_s = address, num_cpus, cancel_grace_s
        _check_reachable(address)
        if not ray.is_initialized():  # one connection per process (the tests' executors share it)
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        self._task = ray.remote(run_attempt)

    def __call__(self, run: Run, owner: str, *, lease_s: float, heartbeat_s: float,
                 shutdown: threading.Event) -> str:
        if getattr(run, "kind", "train") == "eval":
            return execution.execute_claimed(run, owner, lease_s=lease_s, heartbeat_s=heartbeat_s,
                                             shutdown=shutdown)
        if _nproc(run) > 1:
            # A multi-process run: this process drives it and its processes become Ray Train workers,
            # placed on the cluster's nodes by Ray (oikyo.train.ray_launch).
            from oikyo.train.launch import launched_by
            from oikyo.train.ray_launch import RayTrainLauncher

            with launched_by(RayTrainLauncher(self.address, env=task_env())):
                return execution.execute_claimed(run, owner, lease_s=lease_s, heartbeat_s=heartbeat_s,
                                                 shutdown=shutdown)
        log = execution.RunLog(Path(run.run_dir) / "train.log")
        log.write(f"worker {owner} sends attempt {run.attempts} of {run.id} to the Ray cluster at {self.address}")
        beat = execution.Heartbeat(run, owner, lease_s, heartbeat_s, log.write)
        beat.start()
        try:
            result, error, crash = self._wait(run, beat, shutdown, heartbeat_s, log)
        finally:
            beat.stop()
        try:
            if crash is not None and not beat.lost.is_set():
                return self._crashed(run, owner, crash, log)
            return execution._record_end(run, owner, result, error, beat, shutdown, log)
        finally:
            log.close()

    def _wait(self, run: Run, beat, shutdown: threading.Event, poll_s: float, log):
        """Wait for the task, relaying cancellation; returns (result, error, crash)."""
        import ray
        from ray import exceptions as rex

        # max_retries=0: a crashed task is retried through the queue (with resume), not by Ray.
        ref = self._task.options(max_retries=0, num_cpus=self.num_cpus,
                                 runtime_env={"env_vars": task_env()}).remote(run.id)
        cancelled_at = None
        while not ray.wait([ref], timeout=poll_s)[0]:
            stop = beat.cancel.is_set() or beat.lost.is_set() or shutdown.is_set()
            if stop and cancelled_at is None:
                log.write("cancelling the Ray task (it saves a checkpoint and stops)")
                ray.cancel(ref, force=False)
                cancelled_at = time.monotonic()
            elif cancelled_at is not None and time.monotonic() - cancelled_at > self.cancel_grace_s:
                log.write(f"the Ray task did not stop within {self.cancel_grace_s:.0f}s; killing it")
                ray.cancel(ref, force=True)
                cancelled_at = float("inf")
        try:
            return ray.get(ref), None, None
        except rex.TaskCancelledError:
            return SimpleNamespace(status="cancelled"), None, None
        except rex.RayTaskError as wrapped:  # the recipe raised: the original error is the reason
            cause = getattr(wrapped, "cause", None)
            if isinstance(cause, KeyboardInterrupt) or cancelled_at is not None and cause is None:
                return SimpleNamespace(status="cancelled"), None, None
            return None, cause if isinstance(cause, Exception) else wrapped, None
        except rex.RayError as crash:  # the process (or node) running the task died
            if cancelled_at is not None:
                return SimpleNamespace(status="cancelled"), None, None
            return None, None, crash

    def _crashed(self, run: Run, owner: str, crash: Exception, log) -> str:
        """The task's process died: back to the queue to resume, or failed once the attempts are spent."""
        first_line = str(crash).strip().splitlines()[0] if str(crash).strip() else type(crash).__name__
        try:
            checkpoints.sync(run.id, Path(run.run_dir))
        except Exception as sync_error:  # noqa: BLE001
            log.write(f"could not record checkpoints: {sync_error}")
        try:
            return execution.crashed(run, owner, f"the Ray worker running the run died ({type(crash).__name__}: "
                                                 f"{first_line})", log)
        except queue.LeaseLost:
            return execution.LOST
