"""The whole loop with real parts on a tiny random model: a deployment logging its requests, users'
corrections through POST /v1/feedback, `oikyo loop run` as its own process (SIGKILLed while training and
while evaluating, then started again), a real worker training the challenger from the champion's adapter
and evaluating both, the deployment restarted once to load the challenger, and the canary promoting it
on live traffic. Nothing is queued twice and every decision lands once.

The tiny model answers gibberish, so both arms fail the JSON checks alike: the canary's test sees two
equal models and promotes after its minimum requests (the benchmark bench/bench_loop.py measures
rollbacks of a truly worse adapter on the bundled model).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from oikyo.jobs import model_versions, queue, training
from oikyo.jobs.worker import Worker
from oikyo.loop import records
from oikyo.store import db
from oikyo.store.models import DatasetVersion, LoopDecision, Run

TRAIN = {"train": {"num_threads": 1, "max_steps": 3, "batch_size": 4, "lr": 1e-2, "eval_every": 3},
         "data": {"max_length": 64}, "lora": {"rank": 4, "alpha": 8},
         "checkpoint": {"save_every": 3, "keep_best": 1}}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    from oikyo.models.loading import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", bundled_tokenizer_dir, layers=2, hidden=64)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dataset(tmp_path: Path):
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Ticket {i}: my parcel {i} is late."},
                          {"role": "assistant", "content": json.dumps({"category": "shipping", "n": i % 3})}]}
            for i in range(30)]
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name="tickets")
    version, _ = split.split_dataset("tickets", validation=0.2, test=0.2, seed=0)
    return version


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: "
                         + "; ".join(f"{d.action}: {d.reason}" for d in reversed(records.history("bot"))))


def _state() -> str | None:
    cycle = records.last_cycle("bot")
    return cycle.state if cycle is not None else None


def _controller(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", "loop", "run", "--poll", "0.3"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_the_loop_end_to_end_with_a_controller_killed_twice(tmp_path, workspace, tiny_dir, monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    from oikyo.serve.gateway import deployments, keys

    dataset = _dataset(tmp_path)
    champion_run = training.prepare_config({**TRAIN, "model": {"name": str(tiny_dir)},
                                            "data": {**TRAIN["data"], "dataset": dataset.id}})
    run = training.enqueue(champion_run)
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    assert queue.get(run.id).state == "succeeded", queue.get(run.id).error
    [champion] = [v.id for v in model_versions.list_versions(run_id=run.id) if v.kind == "adapter"]

    env = {**os.environ, "OIKYO_HOME": str(workspace), "OIKYO_WORKER_LEASE_S": "20"}
    env.pop("OIKYO_RECIPE", None)
    processes: list[subprocess.Popen] = []
    worker = subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", "worker", "--poll", "0.2"], env=env,
                              stdout=open(tmp_path / "worker.log", "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    processes.append(worker)
    stop_traffic = threading.Event()
    try:
        info = deployments.deploy(champion, name="bot", port=_free_port(), log_requests=True, wait_s=240)
        _, secret = keys.create("bot")
        http = httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {secret}"}, timeout=120,
                            trust_env=False)

        def ask(content: str) -> str:
            answer = http.post("/chat/completions", json={"model": "bot", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": content}]})
            assert answer.status_code == 200, answer.text
            return answer.json()["id"]

        policy = {"deployment": "bot", "triggers": {"new_examples": 8, "cooldown": "1h"},
                  "data": {"min_examples": 8},
                  "train": {"config": TRAIN, "start": "continue", "replay": 0.25},
                  "gate": {"dataset": dataset.id, "split": "validation", "require": "not_worse", "margin": 1.0,
                           "forgetting_max": None, "limit": 6},
                  "canary": {"share": 0.5, "min_requests": 6, "max_duration": "5m"},
                  "rollback": {"margin": 1.0}}
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
        # `oikyo loop apply` starts now and is waited for after the traffic below (no controller runs yet)
        applying = subprocess.Popen([sys.executable, "-m", "oikyo.cli.main", "loop", "apply",
                                     str(tmp_path / "policy.yaml")], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        for i in range(12):  # production traffic, each answer corrected by its user
            response_id = ask(f"Order {i} arrived broken, what now?")
            fixed = http.post("/feedback", json={"response_id": response_id,
                                                 "correction": json.dumps({"category": "damaged", "n": i % 3})})
            assert fixed.status_code == 200, fixed.text
        _, applied_err = applying.communicate(timeout=120)
        assert applying.returncode == 0, applied_err

        log = tmp_path / "controller.log"
        controller = _controller(env, log)
        processes.append(controller)
        _wait(lambda: _state() == "training" and records.last_cycle("bot").run_id, 120, "the training run")
        os.killpg(controller.pid, signal.SIGKILL)  # killed while its run trains
        controller.wait(10)
        controller = _controller(env, log)
        processes.append(controller)
        _wait(lambda: _state() == "evaluating" and len(records.last_cycle("bot").eval_jobs or {}) == 2, 240,
              "the evaluations")
        os.killpg(controller.pid, signal.SIGKILL)  # killed while the evaluations run
        controller.wait(10)
        controller = _controller(env, log)
        processes.append(controller)

        _wait(lambda: _state() == "canary", 300, "the canary")

        def traffic():
            n = 0
            while not stop_traffic.is_set():
                n += 1
                try:
                    ask(f"Canary question {n}?")
                except (AssertionError, httpx.HTTPError):
                    time.sleep(0.2)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        _wait(lambda: _state() in ("promoted", "rolled_back"), 180, "the canary's verdict")
        stop_traffic.set()
        sender.join(60)

        cycle = records.last_cycle("bot")
        assert cycle.state == "promoted", [d.reason for d in records.history("bot")]
        weights = {v["model"]: v["weight"] for v in deployments.get("bot").variants}
        assert weights == {champion: 0.0, cycle.challenger: 1.0}

        with db.session() as s:
            names = Counter(r.name for r in s.query(Run).filter(Run.name.like(f"loop bot {cycle.id}%")))
            keys_seen = Counter(d.dedupe_key for d in s.query(LoopDecision).filter(LoopDecision.cycle_id == cycle.id))
            traffic_version = s.get(DatasetVersion, cycle.dataset_version_id)
        assert names == {f"loop bot {cycle.id} train": 1, f"loop bot {cycle.id} eval-challenger": 1,
                         f"loop bot {cycle.id} eval-champion": 1}
        assert all(count == 1 for count in keys_seen.values()), keys_seen
        actions = [d.action for d in reversed(records.history("bot")) if d.cycle_id == cycle.id]
        assert actions == ["triggered", "dataset", "train", "trained", "gate_passed", "canary_load",
                           "canary_started", "promote"], actions

        child = model_versions.get(cycle.challenger)
        assert child.lineage["parent_model_version"] == champion
        assert json.dumps(traffic_version.lineage).count("chatcmpl") >= 8  # the request ids it came from
    finally:
        stop_traffic.set()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        try:
            deployments.stop("bot")
        except Exception:  # noqa: BLE001 - best effort: the deployment may never have started
            pass
