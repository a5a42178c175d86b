"""`oikyo train`, `oikyo runs ...` and `oikyo worker` as a user runs them: real processes, exit codes,
readable messages, no tracebacks. Training is the fast fake recipe (tests/jobs/fake_recipe.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

import jobhelpers  # noqa: E402


def oikyo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@contextmanager
def _children_get_default_sigint():
    """Children started within this block begin with SIGINT at its default, so Python gives them its
    Ctrl-C handler even where this suite was started with SIGINT ignored (a non-interactive shell's
    `cmd &` does that, and an exec'd child inherits it: it would ignore the test's Ctrl-C)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


@pytest.fixture(autouse=True)
def fake_recipe(monkeypatch):
    jobhelpers.use_fake_recipe(monkeypatch)


@pytest.fixture
def dataset(tmp_path):
    return jobhelpers.make_dataset(tmp_path)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return jobhelpers.make_model_dir(tmp_path / "fake-model")


@pytest.fixture
def autostarted():
    """Stops the background worker a test's `oikyo train` started (the test runs in its own workspace)."""
    from oikyo.jobs import autostart

    yield
    pid = autostart.autostarted_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


def _no_runs() -> bool:
    from oikyo.jobs import runs

    return runs.list_runs() == []


def test_every_command_has_help():
    listed = oikyo("runs", "--help")
    assert listed.returncode == 0
    for command in ("list", "show", "logs", "watch", "metrics", "cancel", "resume", "reproduce"):
        assert command in listed.stdout
    train_help = oikyo("train", "--help")
    assert train_help.returncode == 0
    for option in ("--config", "--set", "--dataset", "--model", "--name", "--detach", "--no-start-worker"):
        assert option in train_help.stdout
    worker_help = oikyo("worker", "--help")
    assert worker_help.returncode == 0 and "--once" in worker_help.stdout


def test_a_bad_config_lists_every_problem_and_queues_nothing(dataset, model_dir):
    result = oikyo("train", "--dataset", dataset.id, "--model", str(model_dir),
                   "--set", "train.lr=-1", "--set", "train.epoch=3", "--set", "lora.rank=zero")
    _no_traceback(result)
    assert result.returncode == 2
    for expected in ("Invalid training config (3 problems)", "train.lr", "train.epoch: unknown setting; did you mean train.epochs?",
                     "lora.rank"):
        assert expected in result.stderr
    assert _no_runs()


def test_a_missing_dataset_and_model_are_reported_together_before_queueing(tmp_path):
    result = oikyo("train", "--dataset", "no-such-data", "--model", str(tmp_path / "nowhere"))
    _no_traceback(result)
    assert result.returncode == 2
    assert "data.dataset: no dataset version matches 'no-such-data'" in result.stderr
    assert "model.name: unknown model" in result.stderr
    assert _no_runs()
    missing_file = oikyo("train", "--config", str(tmp_path / "absent.yaml"))
    assert missing_file.returncode == 2 and "no such config file" in missing_file.stderr
    _no_traceback(missing_file)


def test_an_unsplit_dataset_is_refused_with_what_to_do(tmp_path, model_dir):
    from oikyo.data import versions

    plain = versions.import_dataset(jobhelpers.write_chat_rows(tmp_path / "plain.jsonl"), name="plain").version
    result = oikyo("train", "--dataset", plain.id, "--model", str(model_dir))
    _no_traceback(result)
    assert result.returncode == 2 and "is not split; run `oikyo data split plain` first" in result.stderr


def test_detach_then_show_worker_once_logs_metrics_and_list(dataset, model_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  dataset: {dataset.name}\nmodel:\n  name: {model_dir}\ntrain:\n  max_steps: 8\n")
    queued = oikyo("train", "--config", str(config), "--set", "checkpoint.save_every=4", "--detach",
                   "--no-start-worker", "--name", "cli-run")
    _no_traceback(queued)
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip()
    assert run_id.startswith("run-") and "No worker is running" in queued.stderr
    shown = oikyo("runs", "show", run_id)
    assert shown.returncode == 0 and "queued" in shown.stdout and "cli-run" in shown.stdout

    worked = oikyo("worker", "--once")
    assert worked.returncode == 0, worked.stderr
    info = json.loads(oikyo("runs", "show", run_id[4:], "--json").stdout)
    assert info["state"] == "succeeded" and info["progress"]["step"] == 8
    assert [c["step"] for c in info["checkpoints"]] == [4, 8]
    [mv] = info["model_versions"]
    assert mv["id"] in oikyo("runs", "show", run_id).stdout
    rows = json.loads(oikyo("runs", "metrics", run_id, "--json").stdout)
    assert [r["step"] for r in rows if r["name"] == "loss"] == list(range(1, 9))
    table = oikyo("runs", "metrics", run_id, "--name", "loss")
    assert table.returncode == 0 and "loss" in table.stdout
    assert "trained 8 steps" in oikyo("runs", "logs", run_id).stdout
    assert "trained 8 steps" in oikyo("runs", "logs", run_id, "--follow").stdout  # a finished run: prints and ends
    listed = oikyo("runs", "list")
    assert run_id in listed.stdout and "succeeded" in listed.stdout

    again = oikyo("runs", "resume", run_id, "--no-start-worker")
    _no_traceback(again)
    assert again.returncode == 2 and "nothing to resume" in again.stderr
    unknown = oikyo("runs", "show", "run-00000000")
    assert unknown.returncode == 2 and "no run matches" in unknown.stderr


def test_cancel_and_resume_a_queued_run(dataset, model_dir):
    queued = oikyo("train", "--dataset", dataset.id, "--model", str(model_dir), "--set", "train.max_steps=3",
                   "--detach", "--no-start-worker")
    run_id = queued.stdout.strip()
    cancelled = oikyo("runs", "cancel", run_id)
    assert cancelled.returncode == 0 and "cancelled before it started" in cancelled.stdout
    resumed = oikyo("runs", "resume", run_id, "--no-start-worker")
    assert resumed.returncode == 0 and "queued again" in resumed.stdout
    oikyo("worker", "--once")
    reproduced = oikyo("runs", "reproduce", run_id, "--detach", "--no-start-worker")
    assert reproduced.returncode == 0, reproduced.stderr
    from oikyo.jobs import runs

    copy = runs.resolve(reproduced.stdout.strip())
    assert copy.reproduced_from == run_id and copy.config_hash == runs.resolve(run_id).config_hash


def test_train_starts_a_background_worker_and_follows_the_run_to_its_end(dataset, model_dir, autostarted):
    result = oikyo("train", "--dataset", dataset.id, "--model", str(model_dir), "--set", "train.max_steps=10")
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "Started a background worker" in result.stderr and "succeeded" in result.stdout
    from oikyo.jobs import autostart

    assert autostart.worker_alive()  # it stays up for the next run (and exits when idle)
    second = oikyo("train", "--dataset", dataset.id, "--model", str(model_dir), "--set", "train.max_steps=3",
                   "--set", "train.seed=1")
    assert second.returncode == 0 and "Started a background worker" not in second.stderr


def test_a_failing_run_ends_following_with_its_reason(dataset, model_dir, autostarted, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_AT", "2")
    monkeypatch.setenv("FAKE_FAIL_WITH", "oom")
    result = oikyo("train", "--dataset", dataset.id, "--model", str(model_dir), "--set", "train.max_steps=5")
    _no_traceback(result)
    assert result.returncode == 1
    assert "failed:" in result.stderr and "out of memory" in result.stderr and "oikyo runs resume" in result.stderr


def test_ctrl_c_while_following_stops_only_the_following(dataset, model_dir, autostarted, monkeypatch):
    from oikyo.jobs import runs

    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    with _children_get_default_sigint():
        follower = subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", "train", "--dataset", dataset.id,
                                     "--model", str(model_dir), "--set", "train.max_steps=120"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        jobhelpers.wait_for(lambda: runs.list_runs() and runs.progress(runs.list_runs()[0].id).step >= 3,
                            timeout=90, message="the run to be training")
        follower.send_signal(signal.SIGINT)
        stdout, stderr = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, stderr
    _no_traceback(subprocess.CompletedProcess([], 0, stdout, stderr))
    [run] = runs.list_runs()
    assert "continues in the background" in stderr and f"oikyo runs cancel {run.id}" in stderr
    done = runs.wait(run.id, timeout=90)
    assert done.state == "succeeded"
