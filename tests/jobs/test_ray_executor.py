"""``oikyo worker --executor ray``: queued runs trained as tasks on a real local Ray cluster.

A session fixture starts the cluster as the issue asks: ``ray start --head`` on a free port (6379 is
Redis's here), 2 CPUs, no dashboard nor log monitor, the venv's own interpreter, a temp dir. It runs with
``--block`` in its own process group, which the fixture ends at the end (``ray stop`` would also stop any other
Ray on this shared machine). Each test trains the tiny random model with the real recipe: a run
succeeds with its model version; a run whose Ray worker process is SIGKILLed resumes from its
checkpoint through the queue; a cancel request reaches the Ray task, which checkpoints and stops.
Skips, saying why, when Ray is not installed (scripts/install-ray.sh).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (scripts/install-ray.sh installs oikyo[ray])")

from oikyo.jobs import checkpoints, model_versions, queue, runs, training  # noqa: E402
from oikyo.jobs.worker import Worker  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TRAIN = ("train.num_threads=1", "train.batch_size=4", "data.max_length=64", "train.lr=1e-2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray head (2 CPUs) on free ports; yields its address, ends its process group at the end."""
    ray_bin = VENV_BIN / "ray"
    if not ray_bin.exists():
        pytest.skip(f"no ray command beside {sys.executable} (scripts/install-ray.sh)")
    temp = tempfile.mkdtemp(prefix="oikyo-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    ports = {flag: str(_free_port()) for flag in (
        "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
        "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
               "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp,
               "--include-log-monitor", "false",  # streams worker logs to drivers; log_to_driver=False here
               *[x for pair in ports.items() for x in pair]]
    log = open(Path(temp) / "ray-start.log", "w")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        # Up when its GCS answers and its node has registered the 2 CPUs. Asked from this process (the
        # executors' connection, which the tests share), not by a `ray status` process per look.
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited {head.returncode}: {(Path(temp) / 'ray-start.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up: {(Path(temp) / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(0.1)
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        while ray.cluster_resources().get("CPU", 0) < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head has no CPUs: {ray.cluster_resources()}")
            time.sleep(0.1)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for sig, wait_s in ((signal.SIGTERM, 2), (signal.SIGKILL, 5)):  # the cluster holds nothing to keep
            try:
                os.killpg(head.pid, sig)  # the group this fixture started, nothing else
            except ProcessLookupError:
                break
            try:
                head.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(autouse=True)
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)


@pytest.fixture
def executor(ray_address):
    from oikyo.jobs.ray_executor import RayExecutor

    return RayExecutor(ray_address, cancel_grace_s=30)


def _dataset(tmp_path: Path, n: int = 40):
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Name thing {i}."},
                          {"role": "assistant", "content": f"alpha {i % 3}"}]} for i in range(n)]
    path = tmp_path / "things.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name="things")
    version, _ = split.split_dataset("things", validation=0.2, test=0.0, seed=0)
    return version


def _task_pid(run, timeout: float = 90) -> int:
    """The pid of the Ray worker process running the run's task (its first line in train.log)."""
    log = Path(run.run_dir) / "train.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(r"Ray task on \S+, pid (\d+)", log.read_text() if log.exists() else "")
        if found:
            return int(found[-1])
        time.sleep(0.2)
    raise AssertionError(f"the Ray task never started: {log.read_text() if log.exists() else 'no log'}")


def _in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    return thread


def test_a_run_queued_and_executed_through_the_ray_executor_succeeds(ray_address, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    run = training.submit_training(None, [*TRAIN, "train.max_steps=4", "checkpoint.save_every=2",
                                          "train.eval_every=2"], dataset=dataset.id, model=str(tiny_model_dir))
    env = {**os.environ, "OIKYO_WORKER_HEARTBEAT_S": "0.5", "OIKYO_WORKER_POLL_S": "0.2"}
    cli = subprocess.run([str(VENV_BIN / "oikyo"), "worker", "--executor", "ray", "--address", ray_address, "--once"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0, cli.stderr[-3000:]

    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    [version] = [v for v in model_versions.list_versions(run_id=run.id) if v.kind != "merged"]
    assert (Path(version.path) / "adapter_model.safetensors").is_file()
    log = (Path(run.run_dir) / "train.log").read_text()
    assert _task_pid(run) != os.getpid() and f"to the Ray cluster at {ray_address}" in log
    assert [step for step, _ in runs.metric_series(run.id, ["loss"])["loss"]] == [1, 2, 3, 4]
    assert checkpoints.latest_step(Path(run.run_dir)) == 4


def test_a_killed_ray_worker_resumes_from_its_last_checkpoint(executor, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    steps, every = 120, 10
    run = training.submit_training(None, [*TRAIN, f"train.max_steps={steps}", f"checkpoint.save_every={every}",
                                          "train.eval_every=1000"],
                                   dataset=dataset.id, model=str(tiny_model_dir))
    worker = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1, executor=executor)
    thread = _in_thread(worker)
    pid = _task_pid(run)
    deadline = time.monotonic() + 90
    while (checkpoints.latest_step(Path(run.run_dir)) or 0) < every:
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    killed_after = checkpoints.latest_step(Path(run.run_dir))
    thread.join(timeout=180)
    assert not thread.is_alive()

    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    assert [outcome for _, outcome in worker.processed] == ["requeued", "succeeded"]
    events = [(e.kind, e.message) for e in runs.events(run.id)]
    log = (Path(run.run_dir) / "train.log").read_text()
    assert "the Ray worker running the run died" in log and "(attempt 1); back in the queue" in log
    assert re.search(r"complete checkpoint found at step (\d+)", log)
    resumed = int(re.search(r"complete checkpoint found at step (\d+)", log).group(1))
    assert resumed >= killed_after >= every
    assert _task_pid(run) != pid  # a new Ray worker ran attempt 2
    assert done.attempts == 2
    # Steps up to the checkpoint were not redone (at most once: the killed task may not have flushed its
    # last metrics); attempt 2 went on from the step after it to the end.
    loss_steps = [step for step, _ in runs.metric_series(run.id, ["loss"])["loss"]]
    assert all(loss_steps.count(s) <= 1 for s in range(1, resumed + 1))
    assert set(range(resumed + 1, steps + 1)) <= set(loss_steps)
    assert re.search(rf"Resumed from step-0*{resumed}:", log)  # the recipe's own line, in attempt 2
    released = [message for kind, message in events if kind == "released"]
    assert len(released) == 1 and "died" in released[0] and "resume from its last complete checkpoint" in released[0]
    assert [kind for kind, _ in events].count("claimed") == 2


def test_ray_worker_crashes_count_towards_max_attempts(executor, tiny_model_dir, tmp_path):
    from sqlalchemy import update

    from oikyo.store import db
    from oikyo.store.models import Run

    dataset = _dataset(tmp_path)
    run = training.submit_training(None, [*TRAIN, "train.max_steps=5000", "checkpoint.save_every=1000",
                                          "train.eval_every=1000"], dataset=dataset.id, model=str(tiny_model_dir))
    with db.session() as s:  # the last attempt: a crash now fails the run instead of queueing it again
        s.execute(update(Run).where(Run.id == run.id).values(max_attempts=1))
    worker = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1, executor=executor)
    thread = _in_thread(worker)
    os.kill(_task_pid(run), signal.SIGKILL)
    thread.join(timeout=90)
    assert not thread.is_alive()

    done = queue.get(run.id)
    assert done.state == "failed" and worker.processed == [(run.id, "failed")]
    assert done.error.startswith("the Ray worker running the run died")
    assert done.error.endswith("on its last attempt (1 of 1)")


def test_a_cancel_request_reaches_the_ray_task(executor, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    run = training.submit_training(None, [*TRAIN, "train.max_steps=5000", "checkpoint.save_every=1000",
                                          "train.eval_every=1000"], dataset=dataset.id, model=str(tiny_model_dir))
    worker = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1, executor=executor)
    thread = _in_thread(worker)
    _task_pid(run)
    deadline = time.monotonic() + 90
    while not runs.metric_series(run.id, ["loss"]).get("loss"):
        assert time.monotonic() < deadline, "the task never reported a step"
        time.sleep(0.2)
    queue.request_cancel(run.id)
    thread.join(timeout=90)
    assert not thread.is_alive()

    done = queue.get(run.id)
    assert done.state == "cancelled" and worker.processed == [(run.id, "cancelled")]
    log = (Path(run.run_dir) / "train.log").read_text()
    assert "cancelling the Ray task" in log and "the Ray task was cancelled" in log  # written by the task
    last = checkpoints.latest_step(Path(run.run_dir))
    assert last is not None and last < 5000  # it checkpointed where it stopped, well before the end


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray"], "needs --address"),
    (["--executor", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    (["--executor", "kubernetes"], "unknown executor"),
    (["--address", "127.0.0.1:1"], "--address goes with --executor ray"),
])
def test_the_worker_refuses_a_bad_executor_or_address_with_a_readable_message(args, message, monkeypatch):
    from typer.testing import CliRunner

    from oikyo.cli.main import app

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(app, ["worker", "--once", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not queue.live_workers(60)  # no worker started


def test_a_multi_process_run_trains_as_ray_train_workers_on_the_one_process_curve(executor, tiny_model_dir,
                                                                                  tmp_path):
    """train.nproc=2 under the Ray executor: two Ray Train workers (not torchrun, not this process) form
    the gloo group, and the loss curve is the one a local one-process run of the same config draws."""
    dataset = _dataset(tmp_path)
    exact = [*TRAIN, "lora.dropout=0", "train.batch_size=3", "train.grad_accum=2", "train.max_steps=6",
             "checkpoint.save_every=3", "train.eval_every=1000"]
    single = training.submit_training(None, exact, dataset=dataset.id, model=str(tiny_model_dir))
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)  # local, one process
    double = training.submit_training(None, [*exact, "train.nproc=2"], dataset=dataset.id,
                                      model=str(tiny_model_dir))
    worker = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1, executor=executor)
    worker.run(once=True)

    for run in (single, double):
        done = queue.get(run.id)
        assert done.state == "succeeded", done.error
    log = (Path(double.run_dir) / "train.log").read_text()
    assert "Launching 2 training processes as Ray Train workers on the Ray cluster at" in log
    assert not (Path(double.run_dir) / "distributed" / "torchrun.log").exists()
    rank0_pid = int(re.search(r"rank 0 of 2 runs on \S+, pid (\d+)", log).group(1))
    assert rank0_pid != os.getpid()
    curves = [dict(runs.metric_series(run.id, ["loss"])["loss"]) for run in (single, double)]
    assert sorted(curves[1]) == sorted(curves[0]) == [1, 2, 3, 4, 5, 6]
    assert max(abs(curves[0][s] - curves[1][s]) for s in curves[0]) <= 1e-5
    assert checkpoints.latest_step(Path(double.run_dir)) == 6
    assert (Path(double.run_dir) / "checkpoints" / "step-000006" / "dcp").is_dir()  # written by the group
    [version] = [v for v in model_versions.list_versions(run_id=double.id) if v.kind != "merged"]
    assert (Path(version.path) / "adapter_model.safetensors").is_file()


def test_a_killed_ray_train_worker_fails_the_attempt_and_the_run_resumes(executor, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    steps, every = 40, 10
    run = training.submit_training(None, [*TRAIN, "train.nproc=2", f"train.max_steps={steps}",
                                          f"checkpoint.save_every={every}", "train.eval_every=1000"],
                                   dataset=dataset.id, model=str(tiny_model_dir))
    worker = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1, executor=executor)
    thread = _in_thread(worker)
    log_path = Path(run.run_dir) / "train.log"
    deadline = time.monotonic() + 120
    while (checkpoints.latest_step(Path(run.run_dir)) or 0) < every:
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    rank0 = int(re.search(r"rank 0 of 2 runs on \S+, pid (\d+)", log_path.read_text()).group(1))
    os.kill(rank0, signal.SIGKILL)
    killed_after = checkpoints.latest_step(Path(run.run_dir))
    thread.join(timeout=300)
    assert not thread.is_alive(), "the group hung after a worker died"

    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    log = log_path.read_text()
    resumed = int(re.findall(r"complete checkpoint found at step (\d+)", log)[-1])
    assert resumed >= killed_after >= every
    assert re.search(rf"Resumed from step-0*{resumed}:", log)
    pids = [int(p) for p in re.findall(r"rank 0 of 2 runs on \S+, pid (\d+)", log)]
    assert len(pids) == 2 and pids[1] != rank0  # the second attempt had new Ray Train workers
    loss_steps = [step for step, _ in runs.metric_series(run.id, ["loss"])["loss"]]
    assert set(range(resumed + 1, steps + 1)) <= set(loss_steps)
