"""Start a multi-process run's processes as Ray Train workers, placed anywhere on a Ray cluster.

The Ray executor (:mod:`oikyo.jobs.ray_executor`) trains a run with ``train.nproc`` > 1 inside
``launch.launched_by(RayTrainLauncher(address, env=...))``. :func:`oikyo.train.launch.run_distributed`
then hands the same ``spec.json`` it gives torchrun to ``nproc`` workers of Ray Train's
``TorchTrainer`` instead: Ray Train places them on the cluster's nodes (one CPU each, or one GPU each
on CUDA), sets up the process group itself (gloo on CPU, NCCL on CUDA, with oikyo's collective
timeout) and the torchrun variables (``RANK``, ``LOCAL_RANK``, ...), and each worker runs
:func:`oikyo.train.launch.main`, the very code a torchrun rank runs: DDP or FSDP2, DCP checkpoints,
a global data position. Nothing about the training differs, so the loss curve is the 1-process one.

The hand-over stays the run folder (``spec.json``, the rows, ``events.jsonl``, ``stop``, the
checkpoints), so every node must see the run folder at the same path: a shared ``OIKYO_HOME``
(a network file system), as Ray Train itself wants shared storage for multi-node runs.

Failures: ``FailureConfig(max_failures=0)``. A worker that raises or dies makes ``fit()`` fail, the
run fails with that rank's own error when it left one, and the job's retry policy resumes it from
its last complete checkpoint, at any world size. Ray Train's workers belong to the worker process
that drives ``fit()``: if that process dies, Ray ends them.

Usage (what the Ray executor does)::

    with launch.launched_by(RayTrainLauncher("10.0.0.1:6380", env={"OIKYO_HOME": ...})):
        run_training(config, ...)   # config.train.nproc == 4: four Ray Train workers
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from oikyo.train import ProcessLost, TrainingError, distributed, launch

STOP_GRACE_S = 120.0  # how long the workers may take to checkpoint and stop once asked to


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: the same rank code torchrun runs (the group is already set up)."""
    code = launch.main([config["spec"]])
    if code != 0:
        raise RuntimeError(f"rank {os.environ.get('RANK')} ended with code {code}")


class RayTrainLauncher:
    """Starts the processes of a run as ``nproc`` Ray Train workers on the cluster the process is connected to.

    ``env``: variables every worker needs (the store's ``OIKYO_*``, offline flags): Ray starts its
    workers from the cluster's own environment, not the driver's.
    """

    def __init__(self, address: str, *, env: dict[str, str] | None = None, cpus_per_worker: float = 1.0):
        self.address, self.env, self.cpus_per_worker = address, dict(env or {}), cpus_per_worker

    def start(self, nproc: int, spec: Path, work: Path, *, device: str, threads: int | None = None):
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        gpu = device == "cuda"
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"spec": str(spec)},
            torch_config=TorchConfig(backend=distributed.backend_for(device),
                                     timeout_s=int(float(os.environ.get(distributed.TIMEOUT_ENV, "600")))),
            scaling_config=ScalingConfig(num_workers=nproc, use_gpu=gpu,
                                         resources_per_worker=None if gpu else {"CPU": self.cpus_per_worker}),
            run_config=RunConfig(name=f"oikyo-{Path(spec).parents[1].name}", storage_path=str(work / "ray-train"),
                                 failure_config=FailureConfig(max_failures=0),
                                 worker_runtime_env={"env_vars": env}),
        )
        return _RayTrainGroup(trainer, work, nproc)


class _RayTrainGroup:
    """``TorchTrainer.fit()`` running in a thread of the worker; run_distributed polls it like torchrun."""

    def __init__(self, trainer, work: Path, nproc: int):
        self.work, self.nproc, self.error = work, nproc, None
        self.thread = threading.Thread(target=self._fit, args=(trainer,), name="ray-train-fit", daemon=True)
        self.thread.start()

    def _fit(self, trainer) -> None:
        try:
            trainer.fit()
        except BaseException as error:  # noqa: BLE001 - becomes the run's failure reason
            self.error = error

    def running(self) -> bool:
        return self.thread.is_alive()

    def terminate(self) -> None:
        """Ask the workers to checkpoint and stop (as a cancel does), then leave the rest to Ray."""
        (self.work / "stop").write_text("stop\n")
        self.thread.join(STOP_GRACE_S)

    def failure(self) -> TrainingError | None:
        """Why the group failed: a rank that left no error of its own died (killed, a lost node), and the
        others' errors (a peer closed the connection) follow from it; else the first rank's own error."""
        if self.error is None:
            return None
        text = str(self.error).strip()
        ray_says = f"{type(self.error).__name__}: {text.splitlines()[0] if text else ''}"
        silent = [rank for rank in range(self.nproc) if launch.rank_error(self.work, rank) is None]
        if silent and len(silent) < self.nproc:
            return ProcessLost(f"a training process died: rank {silent[0]} (a Ray Train worker) ended without an "
                               f"error of its own ({ray_says})")
        own = launch.first_rank_error(self.work)
        if own:
            return TrainingError(f"a training process failed: {own}")
        return TrainingError(f"the Ray Train workers failed: {ray_says}")
