"""Deployment events: recording, redeliveries landing once, and what is firing."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from oikyo.errors import OikyoError
from oikyo.monitor import events

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _alert(deployment, kind, key, at, title="OikyoHighErrorRate"):
    return events.record(deployment, kind, "alertmanager", title, severity="critical",
                         details={"alert_key": key}, dedupe_key=f"{key}:{kind}:{at.isoformat()}", time=at)


def test_record_and_list_newest_first():
    first = events.record("bot", events.DRIFT, "drift", "input length drifted", details={"score": 1.4}, time=T0)
    second = events.record("bot", "note", "oikyo", "redeployed", time=T0 + timedelta(minutes=1))
    events.record("other", "note", "oikyo", "elsewhere")
    listed = events.list_events("bot")
    assert [e.id for e in listed] == [second.id, first.id]
    assert listed[1].details == {"score": 1.4}
    assert [e.title for e in events.list_events("bot", kinds=[events.DRIFT])] == ["input length drifted"]
    assert len(events.list_events("bot", limit=1)) == 1
    assert events.describe(listed[0])["time"] == (T0 + timedelta(minutes=1)).isoformat()


def test_duplicate_dedupe_key_is_a_no_op_even_when_racing():
    results = []

    def deliver():
        results.append(_alert("bot", events.ALERT_FIRING, "fp1", T0))

    deliver()  # migrate first, so the racing threads only race on the insert
    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] is not None and all(r is None for r in results[1:])
    assert len(events.list_events("bot")) == 1


def test_firing_follows_each_alerts_latest_event():
    _alert("bot", events.ALERT_FIRING, "a", T0)
    _alert("bot", events.ALERT_FIRING, "b", T0, title="OikyoReplicaDown")
    _alert("bot", events.ALERT_RESOLVED, "a", T0 + timedelta(minutes=5))
    assert [e.title for e in events.firing("bot")] == ["OikyoReplicaDown"]
    # a late redelivery of a's old firing notification cannot hide its resolution
    _alert("bot", events.ALERT_FIRING, "a", T0 - timedelta(seconds=1))
    assert [e.details["alert_key"] for e in events.firing("bot")] == ["b"]
    # a fires again later
    _alert("bot", events.ALERT_FIRING, "a", T0 + timedelta(minutes=10))
    assert sorted(e.details["alert_key"] for e in events.firing("bot")) == ["a", "b"]
    assert events.firing("other") == []


def test_bad_fields_are_refused_and_long_keys_fit():
    with pytest.raises(OikyoError, match="kind"):
        events.record("bot", "x" * 40, "oikyo", "t")
    with pytest.raises(OikyoError, match="deployment"):
        events.record("", "note", "oikyo", "t")
    key = "k" * 500
    assert events.record("bot", "note", "oikyo", "t", dedupe_key=key) is not None
    assert events.record("bot", "note", "oikyo", "t", dedupe_key=key) is None
    assert events.record("bot", "note", "oikyo", "t", dedupe_key=key + "x") is not None
