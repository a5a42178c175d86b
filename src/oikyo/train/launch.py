"""Launch and supervise a multi-process run (``train.nproc`` > 1) with torchrun, from the worker.

    result = run_distributed(config, run_dir=..., model_dir=..., train_rows=..., eval_rows=...,
                             on_metrics=..., should_stop=..., log=...)   # same arguments as run_training

:func:`oikyo.train.runner.run_training` calls this when ``train.nproc`` > 1 and it is not already
inside a process group, so the worker (not the user) starts the processes::

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \\
        -m oikyo.train.launch <run_dir>/distributed/spec.json

Each rank (:func:`main`) joins the group (:func:`oikyo.train.distributed.init`), runs the same
``run_training`` and leaves through a barrier. The hand-over is plain files in
``<run_dir>/distributed/`` (JSON, never pickle): ``spec.json`` (the config and folders),
``train.jsonl``/``eval.jsonl`` (the rows, read once by the worker), ``events.jsonl`` (rank 0's log
lines and metrics, which the worker follows and forwards to the run's log and metrics table),
``stop`` (created by the worker on a cancel request; every rank stops at the same step and saves),
``error-<rank>.txt`` (why a rank failed) and ``result.json`` (rank 0's TrainResult).

Failure: torchrun stops the whole group when one rank dies (``--max-restarts 0``: the job's retry
policy restarts the run cleanly from its last complete checkpoint) and exits non-zero; this raises
a TrainingError with the rank's reason. A rank that hangs makes the others fail at the group's
timeout. If the worker process itself disappears, rank 0 notices (its parent pid is in the spec)
and the group stops after saving a checkpoint, as on a cancel request.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from oikyo.processes import pid_alive
from oikyo.train import ProcessLost, TrainingError

POLL_S = 0.2

# Who starts the processes of a run trained here: None = torchrun on this node (the default); the Ray
# executor sets a Ray Train launcher (oikyo.train.ray_launch) around the runs it trains across its cluster.
_LAUNCHER: ContextVar = ContextVar("oikyo_launcher", default=None)


@contextmanager
def launched_by(launcher):
    """Multi-process runs trained inside this block start their processes with ``launcher``
    (an object with ``address`` and ``start(nproc, spec, work, device)``; see oikyo.train.ray_launch)."""
    token = _LAUNCHER.set(launcher)
    try:
        yield launcher
    finally:
        _LAUNCHER.reset(token)


def torchrun_command(nproc: int, spec: Path) -> list[str]:
    """The torchrun command line for ``nproc`` processes on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--max-restarts=0", "-m", "oikyo.train.launch", str(spec)]


def _write_rows(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, default=str) + "\n")


def _read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_distributed(config, *, run_dir: Path, model_dir: Path, train_rows, eval_rows, on_metrics, should_stop, log,
                    adapter_dir: Path | None = None, replay=None):
    """Train the run with ``config.train.nproc`` processes; returns rank 0's TrainResult."""
    from oikyo.train.config import resolve_runtime
    from oikyo.train.runner import TrainResult

    if replay is not None:
        raise TrainingError("replay mixing (data.mix) runs in one process only for now; set train.nproc=1")
    work = Path(run_dir) / "distributed"
    if work.exists():
        shutil.rmtree(work)  # a previous attempt's hand-over files (its checkpoints live elsewhere)
    work.mkdir(parents=True)
    _write_rows(work / "train.jsonl", train_rows())
    if eval_rows is not None:
        _write_rows(work / "eval.jsonl", eval_rows())
    launcher = _LAUNCHER.get()
    spec = work / "spec.json"
    spec.write_text(json.dumps({
        "config": config.model_dump(mode="json"), "run_dir": str(run_dir), "model_dir": str(model_dir),
        "adapter_dir": str(adapter_dir) if adapter_dir else None, "has_eval": eval_rows is not None,
        # torchrun's processes watch the worker's pid; Ray's end with the driver (the worker) by themselves
        "parent_pid": os.getpid() if launcher is None else None,
    }))
    nproc = config.train.nproc
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if config.train.num_threads != "auto":
        env["OMP_NUM_THREADS"] = str(config.train.num_threads)
    if launcher is None:
        log(f"Launching {nproc} training processes with torchrun")
        group = _Torchrun(nproc, spec, work, env)
    else:
        log(f"Launching {nproc} training processes as Ray Train workers on the Ray cluster at {launcher.address}")
        threads = None if config.train.num_threads == "auto" else int(config.train.num_threads)
        group = launcher.start(nproc, spec, work, device=resolve_runtime(config).device, threads=threads)
    events = _EventReader(work / "events.jsonl", on_metrics, log)
    try:
        while group.running():
            events.drain()
            if should_stop() and not (work / "stop").exists():
                (work / "stop").write_text("stop\n")
            time.sleep(POLL_S)
        events.drain()
    finally:
        if group.running():  # the worker is leaving (an exception, Ctrl-C): take the group down
            group.terminate()
        for name in ("train.jsonl", "eval.jsonl"):  # copies of the dataset version's rows
            (work / name).unlink(missing_ok=True)
    failure = group.failure()
    if failure is not None:
        raise failure
    result = json.loads((work / "result.json").read_text())
    for key in ("final_checkpoint", "best_checkpoint", "output_dir"):
        result[key] = Path(result[key]) if result[key] else None
    return TrainResult(**result)


class _Torchrun:
    """The group as torchrun's process on this node (its own session, so it is ended as a whole)."""

    def __init__(self, nproc: int, spec: Path, work: Path, env: dict):
        self.work = work
        with open(work / "torchrun.log", "wb") as output:
            self.proc = subprocess.Popen(torchrun_command(nproc, spec), stdout=output, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def failure(self) -> TrainingError | None:
        """Why the group failed (None when every rank succeeded)."""
        return None if self.proc.returncode == 0 else _failure(self.work, self.proc.returncode)


def rank_error(work: Path, rank: int) -> str | None:
    """The error a rank recorded before it failed (a rank that was killed records none)."""
    own = work / f"error-{rank}.txt"
    return own.read_text().strip() if own.is_file() else None


def first_rank_error(work: Path) -> str | None:
    """The earliest error any rank recorded: the others fail after it (a peer closed the connection)."""
    files = sorted(work.glob("error-*.txt"), key=lambda p: p.stat().st_mtime_ns)
    return files[0].read_text().strip() if files else None


def _failure(work: Path, code: int) -> TrainingError:
    """A readable reason: the failed ranks' own errors, else the end of torchrun's output. A rank killed
    by a signal is a :class:`ProcessLost` (the run resumes); one that raised or exited is not."""
    output = (work / "torchrun.log").read_text(errors="replace") if (work / "torchrun.log").is_file() else ""
    # torchrun names the first rank that failed and its exit code (its "Root Cause" block).
    _, marker, block = output.partition("Root Cause")
    root = re.search(r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)", block, re.S) if marker else None
    if root:
        own = rank_error(work, int(root.group(1)))
        if own:
            return TrainingError(f"a training process failed: {own}")
        died = f"a training process died: rank {root.group(1)} exited with code {root.group(2)} (see {work / 'torchrun.log'})"
        return ProcessLost(died) if int(root.group(2)) < 0 else TrainingError(died)
    first = first_rank_error(work)
    if first:
        return TrainingError(f"a training process failed: {first}")
    tail = output.strip().splitlines()[-15:]
    return TrainingError(f"the training processes failed (torchrun exit code {code}); last output:\n" + "\n".join(tail))


class _EventReader:
    """Follows rank 0's events.jsonl and forwards complete lines to the run's log and metrics."""

    def __init__(self, path: Path, on_metrics, log):
        self.path, self.on_metrics, self.log, self.offset = path, on_metrics, log, 0

    def drain(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self.offset)
            while True:
                line = handle.readline()
                if not line.endswith("\n"):
                    break  # not fully written yet: read it next time
                self.offset += len(line.encode("utf-8"))
                event = json.loads(line)
                if "log" in event:
                    self.log(event["log"])
                else:
                    self.on_metrics(event["step"], event["metrics"])


# ----------------------------------------------------------------------------- one rank


def distributed_initialized() -> bool:
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def main(argv: list[str]) -> int:
    """One rank: join the group, train, leave through a barrier."""
    from oikyo.train import distributed
    from oikyo.train.config import TrainConfig, resolve_runtime
    from oikyo.train.runner import run_training

    spec_path = Path(argv[0])
    work = spec_path.parent
    spec = json.loads(spec_path.read_text())
    rank = int(os.environ["RANK"])
    config = TrainConfig.model_validate(spec["config"])
    events = open(work / "events.jsonl", "a", encoding="utf-8") if rank == 0 else None

    def emit(event: dict) -> None:
        if events is not None:
            events.write(json.dumps(event, default=float) + "\n")
            events.flush()

    def should_stop() -> bool:
        parent = spec["parent_pid"]
        return (work / "stop").exists() or (rank == 0 and parent is not None and not pid_alive(parent))

    if not distributed_initialized():  # Ray Train sets the group up itself; torchrun leaves it to us
        distributed.init(resolve_runtime(config).device)
    if rank == 0:
        import socket

        emit({"log": f"rank 0 of {os.environ.get('WORLD_SIZE', '?')} runs on {socket.gethostname()}, "
                     f"pid {os.getpid()}"})
    try:
        result = run_training(
            config, run_dir=Path(spec["run_dir"]), model_dir=Path(spec["model_dir"]),
            train_rows=lambda: _read_rows(work / "train.jsonl"),
            eval_rows=(lambda: _read_rows(work / "eval.jsonl")) if spec["has_eval"] else None,
            on_metrics=lambda step, metrics: emit({"step": step, "metrics": metrics}),
            should_stop=should_stop, log=lambda message: emit({"log": message}),
            adapter_dir=Path(spec["adapter_dir"]) if spec["adapter_dir"] else None,
        )
        if rank == 0:
            record = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(result).items()}
            tmp = work / "result.json.tmp"
            tmp.write_text(json.dumps(record))
            tmp.rename(work / "result.json")
        distributed.shutdown()
        return 0
    except BaseException as error:
        (work / f"error-{rank}.txt").write_text(f"rank {rank}: {type(error).__name__}: {error}")
        raise
    finally:
        if events is not None:
            events.close()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The rank's work is written and closed: leave without the interpreter's final garbage collections over
    # every object torch and transformers made, which kept torchrun (and the worker) waiting seconds for nothing.
    gc.freeze()
    sys.exit(code)
