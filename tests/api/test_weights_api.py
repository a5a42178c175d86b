"""Live weights over REST: ``PUT /deployments/{name}/weights`` and a weights-only ``PUT .../split``
change a running deployment's record without restarting it (its router follows the record)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from jobhelpers import make_model_dir  # noqa: E402

from oikyo.monitor import events  # noqa: E402
from oikyo.serve.gateway import deployments  # noqa: E402
from oikyo.store import db  # noqa: E402
from oikyo.store.models import ModelVersion, utcnow  # noqa: E402

API = "/api/v1"


@pytest.fixture
def running(tmp_path, monkeypatch) -> tuple[str, str]:
    """Deployment "ab" recorded as running (on another host, so no process check applies) with two
    adapter versions at 100/0; starting or stopping a router fails the test."""
    base = make_model_dir(tmp_path / "base")
    ids = []
    for name in ("support", "sales"):
        (tmp_path / name).mkdir()
        ids.append(f"mv-{secrets.token_hex(4)}")
        with db.session() as s:
            s.add(ModelVersion(id=ids[-1], run_id=None, base_model=str(base), kind="adapter",
                               path=str(tmp_path / name), lineage={}, created_at=utcnow()))
    a, b = ids
    deployments._save("ab", None, variants=deployments.make_variants(None, f"{a}=100,{b}=0"), host=None, port=0,
                      replicas=None, log_requests=None, engine=None, settings=None)
    deployments.mark("ab", "running", hostname="elsewhere", pid=4242, error=None)

    def no_restart(*args, **kwargs):
        raise AssertionError("the deployment was restarted")

    monkeypatch.setattr(deployments, "start", no_restart)
    monkeypatch.setattr(deployments, "stop", no_restart)
    return a, b


def test_put_weights_changes_a_running_deployment_in_place(api, running):
    a, b = running
    changed = api.put(f"{API}/deployments/ab/weights", json={"weights": {a: 80, b: 20}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "running"
    assert [(v["label"], v["weight"]) for v in deployments.get("ab").variants] == [(a, 80.0), (b, 20.0)]
    for weights, message in (({"mv-nothere": 1}, "is not a variant"), ({a: -1}, "must be a number >= 0"),
                             ({a: 0, b: 0}, "must not all be 0")):
        refused = api.put(f"{API}/deployments/ab/weights", json={"weights": weights})
        assert refused.status_code == 400 and message in refused.json()["error"]["message"], refused.text
    assert [v["weight"] for v in deployments.get("ab").variants] == [80.0, 20.0]
    assert api.put(f"{API}/deployments/nope/weights", json={"weights": {a: 1}}).status_code == 404
    assert [e.kind for e in events.list_events("ab")] == ["split_changed"]


def test_a_weights_only_split_does_not_restart(api, running):
    a, b = running
    changed = api.put(f"{API}/deployments/ab/split", json={"split": f"{b}=100,{a}=0"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["restarted"] is False and changed.json()["status"] == "running"
    assert [(v["label"], v["weight"]) for v in deployments.get("ab").variants] == [(a, 0.0), (b, 100.0)]
