"""`oikyo tune` and `oikyo tune list` as a user runs them: real processes, exit codes, every problem
listed, no tracebacks, nothing queued on bad input. Training is the fast fake recipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from studyhelpers import BASE, runs_of, tune_env  # noqa: F401

pytestmark = pytest.mark.usefixtures("tune_env")


def oikyo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def oikyo_together(*calls: tuple[str, ...], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Several independent `oikyo` commands run at the same time (each its own process, as ``oikyo``)."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    started = [(args, subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", *args], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env)) for args in calls]
    results = []
    for args, process in started:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def _no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def _sets() -> list[str]:
    return [arg for item in BASE for arg in ("--set", item)]


def _nothing_stored() -> None:
    from oikyo.jobs import runs
    from oikyo.tune import study

    assert runs.list_runs() == [] and study.list_studies() == []


def test_an_invalid_space_is_refused_listing_every_problem(tmp_path, dataset, model_dir):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n"
                     "  train.lrr: {type: float, low: 1.0e-5, high: 1.0e-3}\n"
                     "  lora.rank: {type: int, low: 64, high: 8}\n"
                     "  lora.dropout: {type: gaussian, low: 0.0, high: 0.1}\n")
    result = oikyo("tune", "--dataset", dataset.id, "--model", str(model_dir), "--space", str(space), *_sets(),
                   "--trials", "3", "--no-start-worker")
    _no_traceback(result)
    assert result.returncode == 2, result.stdout + result.stderr
    for name in ("train.lrr", "lora.rank", "lora.dropout"):
        assert name in result.stderr
    assert "train.lr" in result.stderr  # the nearest known key is suggested
    _nothing_stored()


def test_bad_options_are_all_listed_at_once(dataset, model_dir):
    result = oikyo("tune", "--dataset", dataset.id, "--model", str(model_dir), *_sets(), "--trials", "0",
                   "--budget", "5parsecs", "--objective", "val_loss", "--objective", "exact_match",
                   "--pruner", "median", "--sampler", "grid", "--no-start-worker")
    _no_traceback(result)
    assert result.returncode == 2
    for expected in ("--trials: must be at least 1", "--budget: budget '5parsecs'", "cannot prune multi-objective",
                     "--sampler grid"):
        assert expected in result.stderr, result.stderr
    missing = oikyo("tune", "--resume", "no-such-study")
    _no_traceback(missing)
    assert missing.returncode == 2 and "no study matches 'no-such-study'" in missing.stderr
    _nothing_stored()


def test_a_study_runs_from_the_command_line_and_is_listed(tmp_path, dataset, model_dir):
    import jobhelpers

    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n")
    worker = jobhelpers.start_worker_process("--poll", "0.05", log=tmp_path / "worker.log")
    try:
        result = oikyo("tune", "--dataset", dataset.id, "--model", str(model_dir), "--space", str(space), *_sets(),
                       "--trials", "2", "--sampler", "random", "--name", "cli-sweep", "--no-start-worker")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    _no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "trial 0 started: train.lr=" in result.stderr and "trial 1 complete: val_loss" in result.stderr
    assert "Study cli-sweep" in result.stdout and "finished: 2 complete" in result.stdout
    from oikyo.tune import study

    record = study.get("cli-sweep")
    tagged = runs_of(record.id)
    again = oikyo("tune", "--name", "cli-sweep", "--no-start-worker")  # the same name drives the same study
    assert again.returncode == 0 and "exists" in again.stderr and len(runs_of(record.id)) == 2

    # Read-only commands, independent of each other: run at the same time.
    listed, shown_run, shown, as_json, *refusals = oikyo_together(
        ("tune", "list"), ("runs", "show", tagged[0].id, "--json"),
        ("tune", "show", "cli-sweep", "--plots", str(tmp_path / "plots")), ("tune", "show", record.id, "--json"),
        ("tune", "show", "no-such-study"), ("tune", "promote", "cli-sweep", "--trial", "9", "--no-start-worker"))
    assert listed.returncode == 0 and "cli-sweep" in listed.stdout and "2/2" in listed.stdout
    assert f'"study_id": "{record.id}"' in shown_run.stdout
    _no_traceback(shown)
    assert shown.returncode == 0 and "Best trial" in shown.stdout and "2 complete" in shown.stdout
    assert (tmp_path / "plots" / "history.png").read_bytes()[:4] == b"\x89PNG"
    assert as_json.returncode == 0 and '"summary"' in as_json.stdout
    for refused in refusals:
        _no_traceback(refused)
        assert refused.returncode != 0 and ("no study matches" in refused.stderr or "has no trial 9" in refused.stderr)


def test_parallel_starts_workers_until_k_serve_the_queue(monkeypatch, tmp_path):
    from oikyo.jobs import autostart, queue

    started = []

    def fake_spawn(idle_exit_s=autostart.IDLE_EXIT_S):
        started.append(idle_exit_s)
        return autostart.StartedWorker(pid=len(started), log_path=tmp_path / f"w{len(started)}.log")

    monkeypatch.setattr(autostart, "spawn_worker", fake_spawn)
    queue.worker_seen("someone-else-1", "idle")  # one worker already serves the queue
    assert [w.pid for w in autostart.ensure_workers(3)] == [1, 2]
    assert autostart.ensure_workers(1) == []
