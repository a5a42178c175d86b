"""The deployments API without serving processes: the router start is replaced by a stand-in that
records the call, so create, show, stop, the split editor (which restarts a running deployment)
and logs run in milliseconds; traffic stats are read from seeded served_requests rows."""

from __future__ import annotations

import secrets
import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from jobhelpers import make_model_dir  # noqa: E402

from oikyo.serve.gateway import deployments# noqa: E402
from oikyo.store import db  # noqa: E402
from oikyo.store.models import Feedback, ModelVersion, ServedRequest, utcnow  # noqa: E402

API = "/api/v1"


@pytest.fixture
def versions(tmp_path) -> dict[str, str]:
    """Two adapter model versions on a fake base folder (resolvable; never loaded here)."""
    base = make_model_dir(tmp_path / "base")
    out = {}
    for name in ("support", "sales"):
        adapter = tmp_path / name
        adapter.mkdir()
        mv = f"mv-{secrets.token_hex(4)}"
        with db.session() as s:
            s.add(ModelVersion(id=mv, run_id=None, base_model=str(base), kind="adapter", path=str(adapter),
                               lineage={}, created_at=utcnow()))
        out[name] = mv
    return out


@pytest.fixture
def starts(monkeypatch) -> list[str]:
    """Replace starting a router with a stand-in that marks the deployment running (on another host,
    so no process check applies) and records the call."""
    calls: list[str] = []

    def fake_start(name, *, detach=True, wait_s=600.0, log=None, engine_checked=False):
        assert detach
        calls.append(name)
        deployments.mark(name, "running", hostname="elsewhere", pid=4242, error=None)
        return deployments.describe(deployments.get(name))

    monkeypatch.setattr(deployments, "start", fake_start)
    return calls


def test_create_show_list_and_stop(api, versions, starts):
    created = api.post(f"{API}/deployments", json={"model": versions["support"], "name": "bot", "port": 0,
                                                    "log_requests": True})
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["name"] == "bot" and info["status"] == "running" and info["log_requests"] is True
    assert info["variants"] == [{"label": versions["support"], "model": versions["support"], "weight": 100.0}]
    assert starts == ["bot"]
    again = api.post(f"{API}/deployments", json={"model": versions["support"], "name": "bot"})
    assert again.status_code == 400 and "already running" in again.json()["error"]["message"]
    assert starts == ["bot"]

    assert [d["name"] for d in api.get(f"{API}/deployments").json()] == ["bot"]
    shown = api.get(f"{API}/deployments/bot").json()
    assert shown["model"] == versions["support"] and shown["log"].endswith("deployment.log")

    stopped = api.post(f"{API}/deployments/bot/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    restarted = api.post(f"{API}/deployments", json={"name": "bot"})  # the name alone starts it again
    assert restarted.status_code == 201 and starts == ["bot", "bot"]


def test_create_refuses_bad_input(api, versions, starts):
    cases = [({"model": "mv-doesnotexist"}, 404, "unknown model"),
             ({"model": versions["support"], "replicas": "lots"}, 400, "--replicas must be"),
             ({"model": versions["support"], "split": "nonsense"}, 400, "bad --split item"),
             ({"model": versions["support"], "engine": "tgi"}, 400, "--engine must be one of"),
             ({"model": versions["support"], "engine": "llamacpp", "gguf_quant": "q2_k"}, 400,
              "--gguf-quant must be one of"),  # the field reaches the engine's check
             ({"model": versions["support"], "weights": "float8"}, 400, "--weights must be one of"),
             ({"model": versions["support"], "engine": "llamacpp", "weights": "float16"}, 400, "--gguf-quant f16"),
             ({"model": versions["support"], "name": "bad name!"}, 400, "nvalid deployment name"),
             ({"model": versions["support"], "name": "../etc"}, 400, "nvalid deployment name"),
             ({"name": "never-made"}, 404, "no deployment named")]
    for body, status, message in cases:
        response = api.post(f"{API}/deployments", json=body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"]["message"], (body, response.text)
    assert starts == [] and api.get(f"{API}/deployments").json() == []


def test_changing_the_split_restarts_a_running_deployment(api, versions, starts):
    a, b = versions["support"], versions["sales"]
    api.post(f"{API}/deployments", json={"model": a, "name": "ab", "port": 0})
    changed = api.put(f"{API}/deployments/ab/split", json={"split": f"{a}=90,{b}=10"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["restarted"] is True and starts == ["ab", "ab"]
    assert [(v["label"], v["weight"]) for v in deployments.get("ab").variants] == [(a, 90.0), (b, 10.0)]

    refused = api.put(f"{API}/deployments/ab/split", json={"split": f"{a}=1,mv-nothere=1"})
    assert refused.status_code == 404 and "unknown model" in refused.json()["error"]["message"]
    assert deployments.get("ab").state == "running" and starts == ["ab", "ab"]  # checked before stopping

    api.post(f"{API}/deployments/ab/stop")
    quiet = api.put(f"{API}/deployments/ab/split", json={"split": f"{a}=50,{b}=50"})
    assert quiet.json()["restarted"] is False and quiet.json()["status"] == "stopped" and len(starts) == 2
    assert [v["weight"] for v in deployments.get("ab").variants] == [50.0, 50.0]
    assert api.put(f"{API}/deployments/nope/split", json={"split": f"{a}=1"}).status_code == 404


def _request(deployment: str, variant: str, *, status: int = 200, latency: float = 0.1, ago_s: float = 10.0,
             tokens: int = 5) -> ServedRequest:
    return ServedRequest(id=f"chatcmpl-{secrets.token_hex(6)}", deployment=deployment, variant=variant, model=variant,
                         endpoint="chat", status=status, latency_s=latency, ttft_s=latency / 2,
                         completion_tokens=tokens, created_at=utcnow() - timedelta(seconds=ago_s))


def test_stats_per_variant_and_over_time_from_served_requests(api, versions):
    a, b = versions["support"], versions["sales"]
    deployments._save("ab", None, variants=deployments.make_variants(None, f"{a}=90,{b}=10"), host=None, port=0,
                      replicas=None, log_requests=None, engine=None, settings=None)
    rows = [_request("ab", a, latency=x, ago_s=550) for x in (0.1, 0.2, 0.3, 0.4)]  # first 100 s slice
    rows += [_request("ab", a, status=500, latency=9.0, ago_s=50), _request("ab", a, status=400, ago_s=50)]
    rows += [_request("ab", b, latency=1.0, ago_s=50), _request("ab", b, latency=3.0, ago_s=250)]
    rows += [_request("ab", a, ago_s=5000), _request("other", a, ago_s=50)]  # outside the window / another one
    with db.session() as s:
        s.add_all(rows)
        s.add(Feedback(deployment="ab", response_id=rows[0].id, variant=a, rating=1.0, created_at=utcnow()))
        s.add(Feedback(deployment="ab", response_id=rows[1].id, variant=a, rating=0.0, created_at=utcnow()))

    view = api.get(f"{API}/deployments/ab/stats", params={"window_s": 600, "buckets": 6}).json()
    assert view["source"] == "served_requests" and view["bucket_s"] == 100
    totals = view["totals"]
    assert (totals["requests"], totals["errors"], totals["client_errors"]) == (8, 1, 1)
    first, second = view["variants"]
    assert first["variant"] == a and first["weight"] == 90.0 and second["variant"] == b
    assert (first["requests"], first["errors"], first["client_errors"]) == (6, 1, 1)
    assert first["error_rate"] == pytest.approx(1 / 6)
    # Latencies of A's successful requests: 0.1, 0.2, 0.3, 0.4 (not the 500 or the 400); linear interpolation.
    assert first["latency_p50_s"] == pytest.approx(0.25) and first["latency_p95_s"] == pytest.approx(0.385)
    assert second["latency_p50_s"] == pytest.approx(2.0) and second["requests"] == 2
    assert first["feedback_count"] == 2 and first["feedback_mean"] == pytest.approx(0.5)
    assert [bucket["requests"] for bucket in view["buckets"]] == [4, 0, 0, 1, 0, 3]
    assert view["buckets"][5]["errors"] == 1 and view["buckets"][5]["by_variant"] == {a: 2, b: 1}
    assert view["all_time"] == {"requests": 9, "errors": 1}

    assert api.get(f"{API}/deployments/nope/stats").status_code == 404
    assert api.get(f"{API}/deployments/ab/stats", params={"buckets": 0}).status_code == 422


def test_logs_and_path_checks(api, versions):
    deployments._save("bot", None, variants=deployments.make_variants(versions["support"], None), host=None, port=0,
                      replicas=None, log_requests=None, engine=None, settings=None)
    deployments.log_path("bot").write_text("".join(f"line {i}\n" for i in range(10)))
    assert api.get(f"{API}/deployments/bot/logs", params={"lines": 2}).json()["lines"] == ["line 8", "line 9"]
    assert api.get(f"{API}/deployments/nope/logs").status_code == 404
    for bad in ("..%5Cbot", "bot%00", "..bot"):
        response = api.get(f"{API}/deployments/{bad}/logs")
        assert response.status_code == 400, (bad, response.text)
    assert api.post(f"{API}/deployments/nope/stop").status_code == 404
