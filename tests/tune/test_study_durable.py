"""Durable studies: two drivers share one study without running a trial twice, and an interrupted
or killed driver's study resumes where it stopped (same trials, no duplicate runs)."""

from __future__ import annotations

import signal

import pytest

from oikyo.jobs import runs
from oikyo.tune import study

from studyhelpers import (WorkerThreads, new_study, read_log, runs_of, start_driver_process,  # noqa: F401
                          tune_env, wait_for)

pytestmark = pytest.mark.usefixtures("tune_env")


def _claims(run_id: str) -> int:
    return sum(1 for e in runs.events(run_id) if e.kind == "claimed")


def _logs(tmp_path) -> str:
    return read_log(tmp_path / "driver0.log") + read_log(tmp_path / "driver1.log")


def _check_two_drivers(tmp_path, dataset, model_dir) -> None:
    import jobhelpers

    record = new_study(dataset, model_dir, n_trials=6, parallel=2, sampler="random", pruner="none", name="shared")
    workers = [jobhelpers.start_worker_process("--poll", "0.05", log=tmp_path / f"worker{i}.log") for i in range(2)]
    drivers = [start_driver_process("shared", tmp_path / f"driver{i}.log") for i in range(2)]
    try:
        for driver in drivers:
            assert driver.wait(timeout=180) == 0, _logs(tmp_path)
    finally:
        for process in workers + drivers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    found = study.trials(record.id)
    assert len(found) == 6 and all(t["state"] == "complete" for t in found), found
    tagged = runs_of(record.id)
    assert sorted(r.trial_number for r in tagged) == [0, 1, 2, 3, 4, 5]  # one run per trial, never two
    assert all(_claims(r.id) == 1 for r in tagged)  # and each run trained by one worker
    assert study.get("shared").launched == 6
    logs = _logs(tmp_path)
    assert sum("started" in line for line in logs.splitlines()) == 6


def test_two_drivers_share_one_study_and_never_run_a_trial_twice(tmp_path, dataset, model_dir):
    _check_two_drivers(tmp_path, dataset, model_dir)


@pytest.mark.postgres
def test_two_drivers_share_one_study_over_postgresql(postgres_url, tmp_path, dataset, model_dir):
    from sqlalchemy import create_engine, inspect

    _check_two_drivers(tmp_path, dataset, model_dir)
    engine = create_engine(postgres_url)
    try:  # Optuna's tables are in their own schema, oikyo's alembic_version is untouched
        assert "trials" in inspect(engine).get_table_names(schema="optuna")
        assert "trials" not in inspect(engine).get_table_names(schema="public")
    finally:
        engine.dispose()


def test_a_killed_driver_s_study_resumes_without_duplicate_runs(monkeypatch, tmp_path, dataset, model_dir):
    import jobhelpers

    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")  # a run takes about a second
    record = new_study(dataset, model_dir, n_trials=4, sampler="random", pruner="none")
    worker = jobhelpers.start_worker_process("--poll", "0.05", log=tmp_path / "worker.log")
    driver = start_driver_process(record.id, tmp_path / "driver.log")
    try:
        wait_for(lambda: len(runs_of(record.id)) >= 2, timeout=60, message="the second trial's run")
        driver.kill()  # no goodbye: its trial is RUNNING in Optuna, its run still trains
        driver.wait(timeout=10)
        assert any(t["state"] == "running" for t in study.trials(record.id))
        monkeypatch.setenv("OIKYO_TUNE_DRIVER_STALE_S", "0.5")
        lines: list[str] = []
        info = study.run_study(record.id, log=lines.append, poll_s=0.02)
    finally:
        for process in (worker, driver):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    assert info["state"] == "finished"
    found = study.trials(record.id)
    assert [t["state"] for t in found] == ["complete"] * 4
    tagged = runs_of(record.id)
    assert sorted(r.trial_number for r in tagged) == [0, 1, 2, 3]  # the adopted trial kept its one run
    assert any("following it again" in line for line in lines), lines


def test_an_interrupted_study_resumes_the_same_trials(dataset, model_dir):
    record = new_study(dataset, model_dir, n_trials=3, sampler="random", pruner="none")
    info = study.run_study(record.id, log=lambda line: None, poll_s=0.02,
                           should_stop=lambda: len(runs_of(record.id)) >= 1)  # stop once the first run is queued
    assert info["state"] == "interrupted" and info["launched"] == 1
    [first] = runs_of(record.id)
    threads = WorkerThreads(1)
    try:
        lines: list[str] = []
        info = study.run_study(record.id, log=lines.append, poll_s=0.02)  # what `oikyo tune --resume` does
    finally:
        threads.stop()
    assert info["state"] == "finished" and info["counts"] == {"complete": 3}
    tagged = runs_of(record.id)
    assert len(tagged) == 3 and tagged[0].id == first.id and tagged[0].trial_number == 0
    assert any("trial 0: following it again" in line for line in lines), lines
