"""Running one claimed run: heartbeats, live metrics, the run log, and recording how it ended.

:func:`execute_claimed` is what a worker does with a run it has claimed:

1. opens ``<run_dir>/train.log`` (every line the recipe logs, plus the worker's own notes),
2. starts a heartbeat thread that extends the lease, notices cancel requests, records the
   checkpoints that appear on disk, and notices when the lease was lost,
3. calls the recipe, feeding its metrics to the ``metrics`` table in small batches,
4. records the end: succeeded (and its model version, atomically), cancelled (with its last
   checkpoint), failed (with a readable reason), or back in the queue when the worker is shutting
   down. A worker that lost its lease records nothing: the run belongs to another worker now.
"""

from __future__ import annotations

import logging
import threading
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from oikyo import workspace
from oikyo.jobs import checkpoints, exporters, failures, metrics, model_versions, queue, training
from oikyo.jobs.metrics import MetricsWriter
from oikyo.store import artifacts
from oikyo.store.models import Run
from oikyo.train import ProcessLost

logger = logging.getLogger("oikyo.jobs")

LOST, REQUEUED = "lost", "requeued"


class RunLog:
    """Appends timestamped lines to ``train.log`` (thread-safe; flushed per line so readers follow it)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()

    def write(self, message: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            for line in str(message).rstrip("\n").splitlines() or [""]:
                self._file.write(f"{stamp} {line}\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Heartbeat(threading.Thread):
    """Keeps the lease alive every ``interval`` seconds, watches for cancel requests and lost leases, and
    puts the runs of dead workers back in the queue (:func:`oikyo.jobs.queue.requeue_orphans`)."""

    def __init__(self, run: Run, owner: str, lease_s: float, interval: float, log: Callable[[str], None]):
        super().__init__(name=f"heartbeat-{run.id}", daemon=True)
        self.job, self.owner, self.lease_s, self.interval, self.say = run, owner, lease_s, interval, log
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()

    def run_once(self) -> None:
        try:
            if queue.heartbeat(self.job.id, self.owner, self.lease_s) and not self.cancel.is_set():
                self.say("cancel requested: saving a checkpoint and stopping")
                self.cancel.set()
            queue.worker_seen(self.owner, "busy", self.job.id)
        except queue.LeaseLost:
            if not self.lost.is_set():
                self.say(f"worker {self.owner} lost its lease on the run; stopping without recording anything")
                self.lost.set()
            return
        except Exception as error:  # noqa: BLE001 - a busy database: try again at the next beat
            logger.warning("heartbeat for %s failed: %s", self.job.id, error)
            return
        try:
            checkpoints.sync(self.job.id, Path(self.job.run_dir))
        except Exception as error:  # noqa: BLE001 - records catch up at the next beat or at the end
            logger.warning("checkpoint sync for %s failed: %s", self.job.id, error)
        try:
            queue.requeue_orphans()  # runs of dead workers go back to the queue even while every worker is busy
        except Exception as error:  # noqa: BLE001 - the next beat tries again
            logger.warning("could not requeue orphaned runs: %s", error)

    def run(self) -> None:  # noqa: D102 - threading.Thread entry point
        while not self._done.wait(self.interval):
            self.run_once()
            if self.lost.is_set():
                return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=max(5.0, self.interval * 2))


def run_folder(run: Run) -> Path:
    """Where this machine keeps the run's folder: the recorded path, or, when that path is not on this
    machine and artifacts are shared (``OIKYO_ARTIFACTS_URL``), this workspace's ``runs/<id>``, where
    the attempt fetches the run's newest checkpoint from the store (a run queued or started elsewhere)."""
    recorded = Path(run.run_dir)
    if recorded.is_dir() or not artifacts.is_remote():
        return recorded
    return workspace.subdir("runs") / run.id


def execute_claimed(run: Run, owner: str, *, lease_s: float, heartbeat_s: float,
                    shutdown: threading.Event) -> str:
    """Train a run this worker has claimed; returns how it ended (a run state, ``lost`` or ``requeued``)."""
    run.run_dir = str(run_folder(run))  # this attempt's folder (the record keeps where it was queued)
    run_dir = Path(run.run_dir)
    log = RunLog(run_dir / "train.log")
    log.write(f"worker {owner} starts attempt {run.attempts} of {run.id}"
              + (f" (resume {run.resume_count})" if run.resume_count else ""))
    beat = Heartbeat(run, owner, lease_s, heartbeat_s, log.write)

    def should_stop() -> bool:
        return beat.cancel.is_set() or beat.lost.is_set() or shutdown.is_set()

    result = error = None
    with metrics_for(run, run_dir, log) as writer:
        beat.start()
        try:
            result = _execute(run, on_metrics=writer.add, should_stop=should_stop, log=log.write)
        except Exception as caught:  # noqa: BLE001 - every failure becomes a readable reason on the run
            error = caught
        finally:
            beat.stop()
    try:
        return _record_end(run, owner, result, error, beat, shutdown, log)
    finally:
        log.close()


@contextmanager
def metrics_for(run: Run, run_dir: Path, log: RunLog) -> Iterator[MetricsWriter]:
    """The run's metrics writer and exporters for one attempt; flushed and closed on the way out. First
    it readies the attempt's checkpoint: the newest one is fetched from the shared store when this
    machine lacks it (:func:`checkpoints.restore_latest`), and the log says where the recipe resumes;
    an attempt that resumes is counted (``resume_count``), and what earlier attempts stored for the
    steps after the resume point is deleted (this attempt reports them again).
    The local worker and the Ray task both use it, so both attempts start the same way."""
    fetched = checkpoints.restore_latest(run.id, run_dir)
    if fetched is not None:
        log.write(f"fetched checkpoint step {fetched} from the shared artifact store")
    resume_from = checkpoints.latest_step(run_dir)
    dropped = metrics.drop_after(run.id, resume_from or 0)
    if resume_from is not None:
        queue.record_resume(run.id, run.lease_owner, resume_from)
        log.write(f"complete checkpoint found at step {resume_from}; the recipe resumes from it")
    if dropped:
        log.write(f"deleted {dropped} metric values of steps after {resume_from or 0} (reported again)")
    sinks = exporters.open_exporters(exporters.enabled(run.config), run_dir=run_dir, run_id=run.id,
                                     params=run.config, log=log.write)
    writer = MetricsWriter(run.id, sinks=sinks, warn=log.write, durable=checkpoint_steps(run.config))
    try:
        yield writer
    finally:
        writer.flush()
        exporters.close_all(sinks)


def checkpoint_steps(config: dict) -> Callable[[int], bool]:
    """Whether the recipe checkpoints after a step, from the run's config (every ``checkpoint.save_every``
    steps and at ``train.max_steps``): the metrics writer stores such a step's values before that save."""
    every = ((config or {}).get("checkpoint") or {}).get("save_every")
    last = ((config or {}).get("train") or {}).get("max_steps")
    every = every if isinstance(every, int) and every > 0 else None
    return lambda step: (every is not None and step % every == 0) or step == last


def _execute(run: Run, **kwargs):
    """Dispatch a claimed job by kind: evaluations to oikyo.evaluate, everything else to the training recipe."""
    if getattr(run, "kind", "train") == "eval":
        from oikyo.evaluate import jobs as eval_jobs

        return eval_jobs.execute(run, **kwargs)
    return training.execute(run, **kwargs)


def _record_end(run: Run, owner: str, result, error: BaseException | None, beat: Heartbeat,
                shutdown: threading.Event, log: RunLog) -> str:
    """Store how the attempt ended (nothing when the lease was lost)."""
    if beat.lost.is_set():
        return LOST
    best = getattr(result, "best_checkpoint", None) if result is not None else None
    try:
        checkpoints.sync(run.id, Path(run.run_dir), best=best)
    except Exception as sync_error:  # noqa: BLE001
        log.write(f"could not record checkpoints: {sync_error}")
    try:
        return _store_outcome(run, owner, result, error, beat, shutdown, log)
    except queue.LeaseLost:
        log.write(f"worker {owner} lost its lease before recording the end; the new owner records it")
        return LOST


def crashed(run: Run, owner: str, what: str, log: RunLog) -> str:
    """A process training the run died (``what`` says which and how): back to the queue to resume from
    its last complete checkpoint, or failed once ``max_attempts`` are spent; such crashes count."""
    if run.attempts >= run.max_attempts:
        reason = f"{what}, on its last attempt ({run.attempts} of {run.max_attempts})"
        log.write(f"failed: {reason}")
        queue.fail(run.id, owner, reason)
        return queue.FAILED
    reason = f"{what} (attempt {run.attempts}); back in the queue to resume from its last complete checkpoint"
    log.write(reason)
    # Unlike queue.release (a clean shutdown), the crash counts towards max_attempts.
    queue._finish(run.id, owner, queue.QUEUED, reason, values={"lease_owner": None})
    return REQUEUED


def _store_outcome(run, owner, result, error, beat, shutdown, log) -> str:
    if isinstance(error, ProcessLost):
        return crashed(run, owner, str(error), log)
    if error is not None:
        reason = failures.describe(error)
        if not failures.is_user_error(error):
            log.write("".join(traceback.format_exception(error)))
        log.write(f"failed: {reason}")
        queue.fail(run.id, owner, reason)
        return queue.FAILED
    status = getattr(result, "status", None)
    if status == "cancelled":
        if beat.cancel.is_set() or not shutdown.is_set():
            log.write("cancelled; the last checkpoint is kept")
            queue.mark_cancelled(run.id, owner)
            return queue.CANCELLED
        log.write("the worker is shutting down; the run goes back to the queue and resumes elsewhere")
        queue.release(run.id, owner, "the worker shut down; back in the queue to resume from its last checkpoint")
        return REQUEUED
    if status not in ("succeeded", "stopped_early"):
        reason = f"the recipe returned an unknown status {status!r}"
        queue.fail(run.id, owner, reason)
        return queue.FAILED
    if getattr(run, "kind", "train") == "eval":
        # The evaluation records are stored in the transaction that marks the job succeeded.
        summary = getattr(result, "summary", "") or "evaluated"
        queue._finish(run.id, owner, queue.SUCCEEDED, f"succeeded; {summary}", extra=list(result.records))
        log.write(f"succeeded; {summary}")
        return queue.SUCCEEDED
    output = Path(getattr(result, "output_dir", None) or Path(run.run_dir) / "output")
    version = None
    if output.is_dir():
        extra = {"steps": getattr(result, "steps", None), "tokens": getattr(result, "tokens", None),
                 "best_eval_loss": getattr(result, "best_eval_loss", None), "status": status}
        replay = getattr(result, "replay", None)  # data.mix: which replay set was mixed in
        version = model_versions.build(run, output, extra={"training": extra, **({"replay": replay} if replay else {})})
    else:
        log.write(f"the recipe reported success but wrote no output folder at {output}")
    queue.complete(run.id, owner, version)
    log.write(f"{status}" + (f"; model version {version.id} at {version.path}" if version else ""))
    return queue.SUCCEEDED
