"""`oikyo deployments watch --once`: the signals a user watches, read from the store, with what
cannot be read said in a note (no Prometheus, no running router needed)."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.monitor import events
from oikyo.store import db
from oikyo.store.models import Deployment, DriftCheck, ServedRequest, utcnow


def _seed():
    now = utcnow()
    with db.session() as s:
        s.add(Deployment(name="bot", model="m", variants=[{"label": "m", "model": "m", "weight": 1}],
                         host="127.0.0.1", port=1, state="stopped"))
        for i in range(100):  # 100 requests in the last minute: 4 server errors, latency 0.01 .. 0.96 s
            s.add(ServedRequest(id=f"r{i}", deployment="bot", variant="m", model="m", endpoint="chat",
                                created_at=now - timedelta(seconds=i * 0.5), status=500 if i % 25 == 0 else 200,
                                latency_s=0.01 * (i + 1), ttft_s=0.001 * (i + 1), completion_tokens=5,
                                quality={"chars": 10, "degenerate": i < 10}))
        s.add(DriftCheck(deployment="bot", variant="m", detector="input_length", reference="dv-1", requests=200,
                         statistic=3.0, threshold=2.0, score=1.5, alarm=True, created_at=now))
    events.record("bot", events.ALERT_FIRING, "alertmanager", "OikyoHighLatency", severity="page",
                  details={"alert_key": "f1"})


def test_watch_once_shows_traffic_drift_and_what_is_firing():
    _seed()
    result = CliRunner().invoke(app, ["deployments", "watch", "bot", "--once", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    t = view["traffic"]
    assert t["requests"] == 100 and t["errors"] == 4 and abs(t["error_rate"] - 0.04) < 1e-9
    assert abs(t["requests_per_s"] - 100 / 300) < 1e-9
    assert 0.9 <= t["latency_p99_s"] <= 1.0 and 0.4 <= t["latency_p50_s"] <= 0.6
    assert t["ttft_p99_s"] > t["ttft_p50_s"] > 0
    assert [d["detector"] for d in view["drift"]] == ["input_length"] and view["drift"][0]["alarm"]
    assert [e["title"] for e in view["firing"]] == ["OikyoHighLatency"]
    assert view["router"] is None  # stopped: no /metrics to read
    if view["quality"]:  # the quality summary reads what the request log's writer stored
        assert view["quality"]["m"]["checked"] >= 90

    text = CliRunner().invoke(app, ["deployments", "watch", "bot", "--once", "--window", "1"])
    assert text.exit_code == 0, text.output
    assert "OikyoHighLatency" in text.output and "input_length" in text.output and "firing" in text.output


def test_watch_an_unknown_deployment_says_so():
    result = CliRunner().invoke(app, ["deployments", "watch", "nope", "--once"])
    assert result.exit_code != 0 and "nope" in result.output and "Traceback" not in result.output
