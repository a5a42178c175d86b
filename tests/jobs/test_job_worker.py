"""Workers running whole jobs over the fake recipe: success with lineage, live metrics, cancel,
readable failures, crash recovery from the last checkpoint, graceful shutdown, reproduce."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from oikyo.jobs import checkpoints, exporters, model_versions, queue, runs
from oikyo.jobs.worker import Worker
from oikyo.store import db
from oikyo.store.models import Run

from jobhelpers import HEARTBEAT_S, LEASE_S, start_worker_process, submit, wait_for

pytestmark = pytest.mark.usefixtures("fake_recipe")


def _worker(**kwargs) -> Worker:
    return Worker(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, poll_s=0.05, **kwargs)


def _in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    return thread


def _steps(run) -> list[dict]:
    path = Path(run.run_dir) / "fake_steps.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_a_run_trains_to_success_and_registers_a_model_version_with_lineage(backend, dataset, model_dir):
    run = submit(dataset, model_dir, name="sums-lora")
    assert (Path(run.run_dir) / "config.yaml").is_file()
    assert run.config["data"]["dataset"] == dataset.id  # pinned to the exact version
    assert _worker().run(once=True) == 1
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    assert [step for step, _ in runs.metric_series(run.id)["loss"]] == list(range(1, 21))
    assert [c.step for c in checkpoints.list_checkpoints(run.id)] == [5, 10, 15, 20]
    best = [c for c in checkpoints.list_checkpoints(run.id) if c.is_best]
    assert len(best) == 1 and best[0].eval_loss == min(v for _, v in runs.metric_series(run.id)["eval_loss"])
    [mv] = model_versions.list_versions(run_id=run.id)
    assert mv.kind == "adapter" and Path(mv.path) == (Path(run.run_dir) / "output").resolve()
    lineage = mv.lineage
    assert lineage["dataset_hash"] == dataset.content_hash and lineage["dataset_version"] == dataset.id
    assert lineage["config_hash"] == run.config_hash and lineage["config"] == run.config
    assert lineage["seed"] == 0 and lineage["base_model"] == str(model_dir)
    assert lineage["code"]["oikyo"] and "torch" in lineage["packages"] and "transformers" in lineage["packages"]
    assert model_versions.get(mv.id[3:7]).id == mv.id
    info = runs.show(run.id[4:])
    assert info["model_versions"][0]["id"] == mv.id and info["progress"]["step"] == 20
    assert "trained 20 steps" in "\n".join(runs.read_log(run.id))


def test_metrics_can_be_read_while_the_run_is_still_going(dataset, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.1")
    run = submit(dataset, model_dir)
    thread = _in_thread(_worker())

    def seen_while_running():
        progress = runs.progress(run.id)
        return progress if progress.state == "running" and progress.step >= 3 else None

    live = wait_for(seen_while_running, timeout=30, message="metrics during the run")
    assert 3 <= live.step < 20 and "loss" in live.values and live.total_steps == 20
    assert live.eta_s is not None and 0 < live.eta_s < 60
    followed = list(runs.follow_log(run.id, poll_s=0.05))  # started mid-run, returns once the run has ended
    assert queue.get(run.id).state == "succeeded"
    assert followed[-1].endswith("succeeded; model version " + model_versions.list_versions(run_id=run.id)[0].id
                                 + " at " + model_versions.list_versions(run_id=run.id)[0].path)
    thread.join(timeout=60)


def test_cancel_while_running_stops_with_a_checkpoint_and_resume_continues_from_it(dataset, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    run = submit(dataset, model_dir, "train.max_steps=400", "checkpoint.save_every=100")
    thread = _in_thread(_worker())
    wait_for(lambda: runs.progress(run.id).step >= 7, timeout=30, message="step 7")
    assert "cancel requested" in runs.cancel(run.id)
    thread.join(timeout=30)
    cancelled = queue.get(run.id)
    assert cancelled.state == "cancelled" and cancelled.error is None
    [stop_checkpoint] = checkpoints.list_checkpoints(run.id)  # none was due (every 100): only the stop's
    last_step = _steps(run)[-1]["step"]
    assert stop_checkpoint.step == last_step >= 7
    assert Path(stop_checkpoint.path, "COMPLETE").exists()

    monkeypatch.setenv("FAKE_STEP_TIME", "0.0")
    assert runs.resume(run.id).state == "queued"
    _worker().run(once=True)
    resumed = queue.get(run.id)
    assert resumed.state == "succeeded" and resumed.resume_count == 1
    steps = [s["step"] for s in _steps(run)]
    assert steps == list(range(1, 401)), "the resumed run repeated or skipped steps"
    assert "resuming from checkpoint step" in "\n".join(runs.read_log(run.id))


@pytest.mark.parametrize("kind, expected", [
    ("oom", "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"),
    ("context", "longer than the model's context (2048 tokens)"),
    ("crash", "unexpected error (ValueError): something unexpected broke; the traceback is in train.log"),
])
def test_failures_carry_a_readable_reason_and_keep_what_was_written(dataset, model_dir, monkeypatch, kind, expected):
    monkeypatch.setenv("FAKE_FAIL_AT", "7")
    monkeypatch.setenv("FAKE_FAIL_WITH", kind)
    run = submit(dataset, model_dir)
    _worker().run(once=True)
    failed = queue.get(run.id)
    assert failed.state == "failed" and expected in failed.error
    assert [c.step for c in checkpoints.list_checkpoints(run.id)] == [5]
    assert len(runs.metric_series(run.id)["loss"]) == 6
    log = "\n".join(runs.read_log(run.id))
    assert ("Traceback" in log) == (kind == "crash")
    assert queue.claim("another-worker", 30) is None  # a failed run is not retried behind the user's back


def test_a_dataset_that_disappeared_fails_the_run_with_a_readable_reason(dataset, model_dir):
    from oikyo.data import versions

    run = submit(dataset, model_dir)
    versions.parquet_path(dataset).unlink()
    _worker().run(once=True)
    failed = queue.get(run.id)
    assert failed.state == "failed" and failed.error.startswith("missing dataset:")


def test_a_recorded_config_that_no_longer_validates_fails_as_a_bad_config(dataset, model_dir):
    run = submit(dataset, model_dir)
    broken = {**run.config, "train": {**run.config["train"], "lr": -1.0}}
    with db.session() as s:
        s.execute(update(Run).where(Run.id == run.id).values(config=broken))
    _worker().run(once=True)
    failed = queue.get(run.id)
    assert failed.state == "failed" and failed.error.startswith("bad config:") and "train.lr" in failed.error


def test_a_killed_worker_process_is_replaced_and_the_run_resumes_from_its_last_checkpoint(dataset, model_dir,
                                                                                        monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    run = submit(dataset, model_dir, "train.max_steps=60")
    first = start_worker_process(log=tmp_path / "w1.log")
    try:
        wait_for(lambda: checkpoints.latest_step(Path(run.run_dir)) and checkpoints.latest_step(Path(run.run_dir)) >= 10,
                 timeout=60, message="a checkpoint at step 10")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    killed_at = _steps(run)[-1]["step"]
    checkpoint = checkpoints.latest_step(Path(run.run_dir))
    assert queue.get(run.id).state == "running" and killed_at < 60  # orphaned mid-run
    monkeypatch.setenv("FAKE_STEP_TIME", "0.0")  # the second worker's steps need no pace: nothing stops it
    second = start_worker_process("--idle-exit", "30", log=tmp_path / "w2.log")
    try:
        done = wait_for(lambda: (r := queue.get(run.id)).state in queue.FINISHED and r, timeout=90,
                        message="the run to finish after the kill")
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert done.state == "succeeded", done.error
    assert done.attempts == 2
    after = [s for s in _steps(run) if s["pid"] == second.pid]
    assert after[0]["step"] == checkpoint + 1 and after[-1]["step"] == 60
    assert any("expired" in e.message for e in runs.events(run.id))
    assert model_versions.list_versions(run_id=run.id)


def test_a_stopped_worker_puts_its_run_back_and_the_next_worker_finishes_it(dataset, model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    run = submit(dataset, model_dir, "train.max_steps=60", "checkpoint.save_every=100")
    first = start_worker_process(log=tmp_path / "w1.log")
    wait_for(lambda: runs.progress(run.id).step >= 5, timeout=60, message="step 5")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    released = queue.get(run.id)
    assert released.state == "queued" and released.attempts == 0
    stopped_at = checkpoints.latest_step(Path(run.run_dir))
    assert stopped_at >= 5
    monkeypatch.setenv("FAKE_STEP_TIME", "0.0")
    _worker().run(once=True)
    assert queue.get(run.id).state == "succeeded"
    assert [s["step"] for s in _steps(run)] == list(range(1, 61))


def test_heartbeats_keep_a_long_run_with_one_worker_while_another_waits(dataset, model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    run = submit(dataset, model_dir, "train.max_steps=100")  # ~5 s: longer than two leases
    workers = [start_worker_process("--idle-exit", "3", log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: queue.get(run.id).state in queue.FINISHED, timeout=120, message="the run to finish")
    finally:
        for process in workers:
            process.terminate()
            process.wait(timeout=30)
    done = queue.get(run.id)
    assert done.state == "succeeded" and done.attempts == 1
    steps = _steps(run)
    assert [s["step"] for s in steps] == list(range(1, 101)) and len({s["pid"] for s in steps}) == 1


def test_a_worker_that_lost_its_lease_stops_and_records_nothing(dataset, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    run = submit(dataset, model_dir, "train.max_steps=400")
    worker = _worker()
    thread = _in_thread(worker)
    wait_for(lambda: runs.progress(run.id).step >= 3, timeout=30, message="step 3")
    with db.session() as s:  # another worker took the run over
        s.execute(update(Run).where(Run.id == run.id).values(lease_owner="intruder"))
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.processed == [(run.id, "lost")]
    taken = queue.get(run.id)
    assert taken.state == "running" and taken.lease_owner == "intruder"


def test_reproduce_trains_a_new_run_from_the_recorded_config_with_the_same_curve(dataset, model_dir):
    run = submit(dataset, model_dir, "train.seed=7")
    _worker().run(once=True)
    again = runs.reproduce(run.id)
    assert again.id != run.id and again.reproduced_from == run.id
    assert (again.config_hash, again.seed, again.dataset_version_id) == (run.config_hash, 7, dataset.id)
    _worker().run(once=True)
    assert queue.get(again.id).state == "succeeded"
    assert runs.metric_series(again.id)["loss"] == runs.metric_series(run.id)["loss"]


def test_finished_runs_cannot_be_resumed_or_cancelled(dataset, model_dir):
    from oikyo.errors import OikyoError

    run = submit(dataset, model_dir, "train.max_steps=3")
    _worker().run(once=True)
    with pytest.raises(OikyoError, match="succeeded; nothing to resume"):
        runs.resume(run.id)
    with pytest.raises(OikyoError, match="already succeeded"):
        runs.cancel(run.id)
    with pytest.raises(OikyoError, match="no run matches"):
        runs.show("run-ffffffff")


def test_export_to_a_missing_library_is_skipped_with_one_log_line(tmp_path):
    lines = []
    sinks = exporters.open_exporters(["tensorboard", "nosuch"], run_dir=tmp_path, run_id="run-x", params={},
                                     log=lines.append)
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        assert sinks == [] and any("tensorboard is not installed" in line for line in lines)
    assert any("'nosuch' is unknown" in line for line in lines)
    assert exporters.enabled({"train": {"report_to": ["TensorBoard"]}}) == ["tensorboard"]
    assert exporters.enabled({"train": {}}) == []


def test_a_run_with_report_to_tensorboard_writes_its_metrics_as_event_files(dataset, model_dir):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extras; install them to run this test")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = submit(dataset, model_dir, "train.max_steps=3", "train.eval_every=2", "train.report_to=[tensorboard]")
    _worker().run(once=True)
    assert runs.resolve(run.id).state == "succeeded"
    events = EventAccumulator(str(Path(run.run_dir) / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "lr", "eval_loss"} <= set(tags)
    stored = dict(runs.metric_series(run.id)["loss"])
    exported = {e.step: e.value for e in events.Scalars("loss")}
    assert exported.keys() == stored.keys() == {1, 2, 3}
    assert exported == pytest.approx(stored)


def test_report_to_is_checked_with_the_rest_of_the_config():
    from oikyo.train.config import ConfigError, load_config

    assert load_config(None, ["train.report_to=tensorboard"]).train.report_to == ["tensorboard"]
    assert load_config(None, ["train.report_to=[mlflow, wandb]"]).train.report_to == ["mlflow", "wandb"]
    with pytest.raises(ConfigError, match="train.report_to"):
        load_config(None, ["train.report_to=[tensorbord]"])


def test_a_run_with_report_to_mlflow_logs_its_params_and_metrics(dataset, model_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow(-skinny) is in the dev extras; install them to run this test")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = submit(dataset, model_dir, "train.max_steps=3", "train.report_to=mlflow")
    _worker().run(once=True)
    assert runs.resolve(run.id).state == "succeeded"
    client = MlflowClient(tracking_uri=uri)
    [logged] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.mlflow.runName = '{run.id}'")
    assert logged.data.params["train.max_steps"] == "3"
    history = {m.step: m.value for m in client.get_metric_history(logged.info.run_id, "loss")}
    assert history == pytest.approx(dict(runs.metric_series(run.id)["loss"]))
    assert logged.info.status == "FINISHED"


def _wandb_history(path: Path) -> dict[int, dict]:
    """The history rows (``{step: {key: value}}``) of an offline ``.wandb`` file, read without wandb's
    private modules: the file is a ``:W&B`` header then the LevelDB log format (32 KiB blocks of
    fragments with 7-byte headers: crc, length, type) around protobuf ``Record`` messages."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, pieces, history = path.read_bytes(), 7, [], {}
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # the rest of the block is padding
            pos += left
            continue
        pieces.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                history[int(row["_step"])] = row
    return history


def test_a_run_with_report_to_wandb_offline_records_its_metrics(dataset, model_dir, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is in the dev extras; install them to run this test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = submit(dataset, model_dir, "train.max_steps=3", "train.report_to=wandb")
    _worker().run(once=True)
    assert runs.resolve(run.id).state == "succeeded"
    records = list((Path(run.run_dir) / "wandb").glob("offline-run-*/*.wandb"))
    assert len(records) == 1, "\n".join(runs.read_log(run.id))  # the log says why an export was skipped
    history = _wandb_history(records[0])
    stored = dict(runs.metric_series(run.id)["loss"])
    assert {step: row["loss"] for step, row in history.items()} == pytest.approx(stored)
    assert set(stored) == {1, 2, 3}
