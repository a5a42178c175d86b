"""The runs API over the fast fake recipe: submit from a config mapping (422 listing every problem),
train with an in-process worker, read metrics, follow the run over server-sent events (which end
with the run, resume after Last-Event-ID and stop when the client goes away), logs, checkpoints,
cancel and resume, the config schema and YAML."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

import jobhelpers  # noqa: E402
from jobhelpers import HEARTBEAT_S, LEASE_S, wait_for  # noqa: E402

from oikyo.jobs import queue  # noqa: E402
from oikyo.jobs.worker import Worker  # noqa: E402

API = "/api/v1"


@pytest.fixture(autouse=True)
def fake_recipe(monkeypatch):
    jobhelpers.use_fake_recipe(monkeypatch)


@pytest.fixture
def dataset(tmp_path):
    return jobhelpers.make_dataset(tmp_path)


@pytest.fixture
def model_dir(tmp_path):
    return jobhelpers.make_model_dir(tmp_path / "fake-model")


def _config(dataset, model_dir, **train) -> dict:
    return {"model": {"name": str(model_dir)}, "data": {"dataset": dataset.name},
            "train": {"max_steps": 12, "eval_every": 4, **train}, "checkpoint": {"save_every": 4}}


def _worker() -> Worker:
    return Worker(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S, poll_s=0.05)


def _submit(api, config: dict, **extra) -> dict:
    response = api.post(f"{API}/runs", json={"config": config, "start_worker": False, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def _events(text: str) -> list[dict]:
    """Parse an event-stream body into [{"event", "id", "data", "comment"}]."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
            else:
                key, _, value = line.partition(": ")
                event[key] = json.loads(value) if key == "data" else value
        out.append(event)
    return out


def test_submit_train_and_read_a_run_through_the_api(api, dataset, model_dir):
    submitted = _submit(api, _config(dataset, model_dir), name="sums-api")
    assert submitted["state"] == "queued" and submitted["name"] == "sums-api" and submitted["kind"] == "train"
    assert submitted["dataset_version"] == dataset.id  # pinned to the exact version
    assert submitted["worker"]["started_pid"] is None and submitted["worker"]["alive"] is False
    run_id = submitted["id"]
    assert [r["id"] for r in api.get(f"{API}/runs").json()] == [run_id]
    assert api.get(f"{API}/runs", params={"state": "running"}).json() == []

    assert _worker().run(once=True) == 1
    shown = api.get(f"{API}/runs/{run_id[4:]}").json()  # a prefix without "run-" works, as in the CLI
    assert shown["id"] == run_id and shown["state"] == "succeeded" and shown["progress"]["step"] == 12
    assert shown["config"]["train"]["max_steps"] == 12 and shown["model_versions"]

    series = api.get(f"{API}/runs/{run_id}/metrics").json()["series"]
    assert [step for step, _ in series["loss"]] == list(range(1, 13))
    assert [step for step, _ in series["eval_loss"]] == [4, 8, 12]
    later = api.get(f"{API}/runs/{run_id}/metrics", params={"names": "loss,lr", "since_step": 9}).json()["series"]
    assert set(later) == {"loss", "lr"} and [s for s, _ in later["loss"]] == [10, 11, 12]

    checkpoints = api.get(f"{API}/runs/{run_id}/checkpoints").json()
    assert [c["step"] for c in checkpoints] == [4, 8, 12] and sum(c["is_best"] for c in checkpoints) == 1
    logs = api.get(f"{API}/runs/{run_id}/logs", params={"tail": 3}).json()["lines"]
    assert len(logs) == 3 and "succeeded" in logs[-1]

    # The finished run's stream: its state, every step once, the end; nothing left waiting.
    body = api.get(f"{API}/runs/{run_id}/events").text
    events = _events(body)
    assert events[0] == {"retry": "2000"} and events[1]["event"] == "state"
    assert events[1]["data"] == {"state": "succeeded"}
    metric_events = [e for e in events if e.get("event") == "metrics"]
    assert [e["data"]["step"] for e in metric_events][:12] == list(range(1, 13))
    assert all(e["id"] == str(e["data"]["step"]) for e in metric_events)
    assert {"loss", "lr"} <= set(metric_events[0]["data"]["values"])
    assert events[-1]["event"] == "end"
    resumed = _events(api.get(f"{API}/runs/{run_id}/events", headers={"Last-Event-ID": "10"}).text)
    assert sorted({e["data"]["step"] for e in resumed if e.get("event") == "metrics"}) == [11, 12]


def test_the_event_stream_follows_a_training_run_live(api, dataset, model_dir, monkeypatch):
    from oikyo.api.routes import runs as runs_routes

    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")
    monkeypatch.setattr(runs_routes, "POLL_S", 0.05)
    run_id = _submit(api, _config(dataset, model_dir, max_steps=20))["id"]
    thread = threading.Thread(target=_worker().run, kwargs={"once": True}, daemon=True)
    thread.start()
    events = _events(api.get(f"{API}/runs/{run_id}/events").text)  # returns once the run has ended
    thread.join(30)
    states = [e["data"]["state"] for e in events if e.get("event") == "state"]
    assert states[-1] == "succeeded" and len(states) >= 2  # saw it queued or running, then the end
    steps = [e["data"]["step"] for e in events if e.get("event") == "metrics"]
    assert set(steps) == set(range(1, 21)) and steps[0] < steps[-1]
    # The rows came in several batches while the run trained: a state change sits between metrics events.
    kinds = [e.get("event") for e in events]
    assert kinds.index("metrics") < len(kinds) - 1 - kinds[::-1].index("state")


def test_heartbeats_while_idle_and_the_stream_stops_when_the_client_goes_away(api, dataset, model_dir, monkeypatch):
    """A queued run with no worker: the stream only heart-beats; closing the connection ends its polling."""
    import httpx
    import uvicorn

    from oikyo.api.routes import runs as runs_routes
    from oikyo.jobs import metrics

    run_id = _submit(api, _config(dataset, model_dir))["id"]
    monkeypatch.setattr(runs_routes, "POLL_S", 0.02)
    monkeypatch.setattr(runs_routes, "HEARTBEAT_S", 0.1)
    calls = {"n": 0}
    real = metrics.updates

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "updates", counted)
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, message="the test server")
    try:
        headers = dict(api.headers)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10, trust_env=False) as client:
            with client.stream("GET", f"{API}/runs/{run_id}/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                seen = ""
                for chunk in response.iter_text():
                    seen += chunk
                    if seen.count(": heartbeat") >= 2:
                        break
        assert '"state":"queued"' in seen and "event: metrics" not in seen
        polled = wait_for(lambda: calls["n"] if _settled(calls) else None, timeout=10, message="polling to stop")
        time.sleep(0.3)
        assert calls["n"] == polled  # nothing polls for a client that left
    finally:
        server.should_exit = True
        thread.join(10)


def _settled(calls: dict) -> bool:
    before = calls["n"]
    time.sleep(0.2)
    return calls["n"] == before


def test_a_bad_config_is_refused_with_every_problem_listed(api, dataset):
    config = {"model": {"name": "no-such-model"}, "data": {"dataset": "no-such-data", "max_length": 2},
              "train": {"lr": -1, "bogus_knob": 3}, "method": {"name": "ppo"}}
    response = api.post(f"{API}/runs", json={"config": config, "start_worker": False})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    fields = {p["field"] for p in error["problems"]}
    assert {"data.max_length", "train.lr", "train.bogus_knob", "method.name", "data.dataset", "model.name"} <= fields
    assert all(p["message"] for p in error["problems"])
    assert api.get(f"{API}/runs").json() == []  # nothing queued

    # A valid config whose references do not resolve: both listed.
    refs = api.post(f"{API}/runs", json={"config": {"data": {"dataset": "nope", "eval_split": None},
                                                    "model": {"name": "nothing-here"}}, "start_worker": False})
    assert refs.status_code == 422
    assert {p["field"] for p in refs.json()["error"]["problems"]} == {"data.dataset", "model.name"}
    not_a_mapping = api.post(f"{API}/runs", json={"config": [1, 2], "start_worker": False})
    assert not_a_mapping.status_code == 422 and not_a_mapping.json()["error"]["problems"]


def test_cancel_and_resume(api, dataset, model_dir):
    run_id = _submit(api, _config(dataset, model_dir))["id"]
    cancelled = api.post(f"{API}/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert "before it started" in cancelled.json()["message"]
    again = api.post(f"{API}/runs/{run_id}/cancel")
    assert again.status_code == 400 and "nothing to cancel" in again.json()["error"]["message"]
    resumed = api.post(f"{API}/runs/{run_id}/resume", json={"start_worker": False})
    assert resumed.status_code == 200 and resumed.json()["state"] == "queued" and resumed.json()["resume_count"] == 0
    assert _worker().run(once=True) == 1
    assert queue.get(run_id).state == "succeeded"
    refused = api.post(f"{API}/runs/{run_id}/resume", json={"start_worker": False})
    assert refused.status_code == 400 and "nothing to resume" in refused.json()["error"]["message"]


def test_unknown_and_malformed_run_ids(api):
    missing = api.get(f"{API}/runs/run-00000000")
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("no run matches")
    for bad in ("..", "run-..", "a%2F..%2Fb", "..%5C..", "run%00"):
        response = api.get(f"{API}/runs/{bad}/metrics")
        assert response.status_code in (400, 404), (bad, response.status_code)
        assert "error" in response.json()
    assert api.get(f"{API}/runs/run-..x/logs").status_code == 400


def test_config_schema_and_yaml(api, dataset, model_dir):
    schema = api.get(f"{API}/config/schema").json()
    assert schema["defaults"]["train"]["lr"] == 0.0002 and schema["defaults"]["lora"]["rank"] == 16
    assert "train" in schema["schema"]["properties"] and "$defs" in schema["schema"]
    config = _config(dataset, model_dir, lr=0.001)
    text = api.post(f"{API}/config/yaml", json={"config": config}).json()["yaml"]
    assert text.startswith("# Run it with: oikyo train --config")
    loaded = yaml.safe_load(text)
    assert loaded["train"]["lr"] == 0.001 and loaded["lora"]["rank"] == 16  # defaults filled in
    assert loaded["data"]["dataset"] == dataset.name  # not pinned: the YAML stays what the user wrote
    bad = api.post(f"{API}/config/yaml", json={"config": {"train": {"lr": "fast", "epochs": 0}}})
    assert bad.status_code == 422
    assert {p["field"] for p in bad.json()["error"]["problems"]} == {"train.lr", "train.epochs"}


def test_runs_need_authentication(anon, dataset, model_dir):
    assert anon.get(f"{API}/runs").status_code == 401
    assert anon.post(f"{API}/runs", json={"config": {}}).status_code == 401
    assert anon.get(f"{API}/config/schema").status_code == 401


def test_integers_beyond_the_database_s_range_are_a_422_not_a_500(api, browser_client, dataset):
    # Found by the schema fuzzer: offset 2**63 reached SQLite ("Python int too large") as a 500.
    huge = str(2**63)
    for path in (f"/api/v1/runs?offset={huge}", f"/api/v1/datasets/{dataset.id}/rows?offset={huge}",
                 f"/api/v1/runs/run-00000000/metrics?since_step={huge}"):
        response = api.get(path)
        assert response.status_code == 422, (path, response.status_code, response.text)
    assert api.get(f"/api/v1/runs?offset={2**63 - 1}").json() == []
    page = browser_client.get(f"/runs?page={huge}")  # the dashboard's page number is clamped
    assert page.status_code == 200 and "<title>" in page.text and "login" not in page.url.path, page.url
