"""Alertmanager's webhook route: alerts become deployment events, once each, behind credentials;
garbage gets a 422 saying what is wrong; the events route and `oikyo deployments show` list them."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from oikyo.monitor import events
from oikyo.store import db
from oikyo.store.models import Deployment

API = "/api/v1"
HOOK = f"{API}/alerts/alertmanager"
TOKEN = "test-login-token-0123456789"

FIRING = {
    "version": "4", "groupKey": "{}:{alertname=\"OikyoHighErrorRate\"}", "truncatedAlerts": 0,
    "status": "firing", "receiver": "oikyo", "groupLabels": {"alertname": "OikyoHighErrorRate"},
    "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "OikyoHighErrorRate", "deployment": "bot", "severity": "critical"},
        "annotations": {"summary": "5% of requests fail", "description": "server errors"},
        "startsAt": "2026-12-06T12:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x", "fingerprint": "c0ffee0123456789",
    }],
}


@pytest.fixture
def client():
    from oikyo.api.app import create_app

    with db.session() as s:
        s.add(Deployment(name="bot", model="m", variants=[{"label": "m", "model": "m", "weight": 1}],
                         host="127.0.0.1", port=1, state="stopped"))
    with TestClient(create_app(TOKEN)) as c:
        yield c


def _post(client, body, token=TOKEN):
    return client.post(HOOK, json=body, headers={"Authorization": f"Bearer {token}"} if token else {})


def _resolved():
    body = copy.deepcopy(FIRING)
    body["status"] = body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["endsAt"] = "2026-12-06T12:05:00Z"
    return body


def test_firing_then_resolved_land_once_each(client):
    answer = _post(client, FIRING)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 1, "duplicates": 0, "skipped": [], "unknown_deployments": []}
    assert _post(client, FIRING).json()["duplicates"] == 1  # redelivered (retry, repeat_interval)
    [event] = events.firing("bot")
    assert (event.kind, event.source, event.severity) == ("alert_firing", "alertmanager", "critical")
    assert event.title == "OikyoHighErrorRate: 5% of requests fail"
    assert event.details["labels"]["deployment"] == "bot" and event.details["ends_at"] is None

    assert _post(client, _resolved()).json()["recorded"] == 1
    assert events.firing("bot") == []
    listed = client.get(f"{API}/deployments/bot/events", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [e["kind"] for e in listed["events"]] == ["alert_resolved", "alert_firing"] and listed["firing"] == []


def test_an_api_key_is_enough_and_anything_else_is_refused(client):
    from oikyo.serve.gateway import keys

    _record, secret = keys.create("alertmanager")
    assert _post(client, FIRING, token=secret).status_code == 200
    assert _post(client, FIRING, token=None).status_code == 401
    assert _post(client, FIRING, token="oik-wrong").status_code == 401
    client.cookies.set("oikyo_session", "x.y")
    assert _post(client, FIRING, token=None).status_code == 403  # a browser session cannot post alerts
    client.cookies.clear()
    keys.revoke(_record.id)
    assert _post(client, _resolved(), token=secret).status_code == 401
    assert len(events.list_events("bot")) == 1


@pytest.mark.parametrize("raw, says", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"version": "4"}', "alerts"),
    (b'{"alerts": [{"status": "burning", "labels": {}, "startsAt": "2026-12-06T12:00:00Z"}]}', "alerts.0.status"),
    (b'{"alerts": [{"status": "firing", "labels": {"a": 1}, "startsAt": "yesterday"}]}', "startsAt"),
])
def test_garbage_gets_a_422_saying_what_is_wrong(client, raw, says):
    answer = client.post(HOOK, content=raw, headers={"Authorization": f"Bearer {TOKEN}",
                                                     "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["error"]["message"]
    assert events.list_events("bot") == []


def test_unknown_deployments_are_kept_and_unlabelled_alerts_skipped(client):
    body = copy.deepcopy(FIRING)
    second = copy.deepcopy(body["alerts"][0])
    second["labels"], second["annotations"] = {"alertname": "OikyoReplicaDown", "deployment": "ghost"}, {}
    second.pop("fingerprint")
    third = copy.deepcopy(second)
    third["labels"] = {"alertname": "Watchdog"}
    body["alerts"] += [second, third]
    answer = _post(client, body).json()
    assert answer["recorded"] == 2 and answer["unknown_deployments"] == ["ghost"]
    assert answer["skipped"] == [{"alertname": "Watchdog", "reason": "no 'deployment' label"}]
    [ghost] = events.firing("ghost")
    assert ghost.title == "OikyoReplicaDown" and len(ghost.details["alert_key"]) == 16
    assert _post(client, body).json()["duplicates"] == 2  # no fingerprint: hashed from the labels, stable


def test_show_lists_firing_alerts_and_recent_events(client):
    from oikyo.cli.main import app

    _post(client, FIRING)
    events.record("bot", events.DRIFT, "drift", "input length drifted (score 1.7)")
    result = CliRunner().invoke(app, ["deployments", "show", "bot"])
    assert result.exit_code == 0, result.output
    assert "firing" in result.output and "OikyoHighErrorRate: 5% of requests fail" in result.output
    assert "input length drifted" in result.output
    shown = CliRunner().invoke(app, ["deployments", "show", "bot", "--json"])
    import json

    data = json.loads(shown.output)
    assert [e["title"] for e in data["firing"]] == ["OikyoHighErrorRate: 5% of requests fail"]
    assert len(data["events"]) == 2


def test_the_dashboards_deployment_card_shows_what_is_firing(client):
    _post(client, FIRING)
    events.record("bot", events.DRIFT, "drift", "input <length> drifted")
    assert client.post(f"{API}/login", json={"token": TOKEN}).status_code == 200
    page = client.get("/deployments").text
    card = page[page.index('id="dep-bot"'):]
    firing = card[card.index("data-firing"):card.index("data-events")]
    assert "OikyoHighErrorRate: 5% of requests fail" in firing and "critical" in firing
    assert "input &lt;length&gt; drifted" in card[card.index("data-events"):]  # escaped, not markup
    _post(client, _resolved())
    assert "data-firing" not in client.get("/deployments").text
