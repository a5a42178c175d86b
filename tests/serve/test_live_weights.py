"""Live traffic weights: ``deployments.set_weights`` changes a deployment's split with no restart.

- ``ab.choose`` never picks a variant of weight 0, sticky users included; ``ab.reweight`` refuses
  unknown variants and bad weights;
- ``set_weights`` updates the record's weights only (same labels, models, order), records a
  ``split_changed`` event, and on bad input writes nothing; ``set_split`` with the same models
  goes through it (no restart);
- ``Routing.follow`` swaps the weights in place and refuses a change of models;
- a real deployment (router and replica processes) moves from 100/0 to 0/100 within 2 s of the
  call, with the same router pid and no failed request.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time

import httpx
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import wait_for

from oikyo.errors import OikyoError
from oikyo.monitor import events
from oikyo.serve.gateway import deployments, keys
from oikyo.serve.gateway.ab import Variant, choose, parse_split, reweight
from oikyo.store import db
from oikyo.store.models import Deployment, utcnow

A = Variant(label="mv-a", model="mv-a", weight=100.0)
B = Variant(label="mv-b", model="mv-b", weight=0.0)
C = Variant(label="c", model="mv-c", weight=50.0)


# ----------------------------------------------------------------------------- choose and reweight


def test_a_zero_weight_variant_is_never_chosen():
    assert parse_split("mv-a=100,mv-b=0") == [("mv-a", 100.0), ("mv-b", 0.0)]
    rng = random.Random(0)
    for variants in ([A, B], [B, A], [A, B, C], [B, C, A]):
        live = {v.label for v in variants if v.weight > 0}
        sticky = {choose(variants, f"user-{i}", salt="bot").label for i in range(3000)}
        anonymous = {choose(variants, None, salt="bot", rng=rng).label for _ in range(3000)}
        assert sticky == live and anonymous == live, variants


def test_choose_at_the_very_top_of_the_range_picks_a_live_variant(monkeypatch):
    from oikyo.serve.gateway import ab

    monkeypatch.setattr(ab, "bucket", lambda user, salt: 1.0)  # (2**64 - 1) / 2**64 rounds to 1.0 as a float
    assert choose([A, B], "u", salt="bot").label == "mv-a"
    assert choose([B, A, B], "u", salt="bot").label == "mv-a"


def test_reweight_keys_by_label_or_model_and_keeps_the_rest():
    out = reweight([A, B, C], {"mv-a": 20, "mv-c": 0})  # "mv-c" is C's model, its label is "c"
    assert [(v.label, v.model, v.weight) for v in out] == [("mv-a", "mv-a", 20.0), ("mv-b", "mv-b", 0.0),
                                                           ("c", "mv-c", 0.0)]
    assert reweight([A, B], {"mv-b": 1.5})[1].weight == 1.5


@pytest.mark.parametrize("weights, message", [
    ({"mv-x": 10}, "'mv-x' is not a variant"),
    ({"mv-a": -1}, "must be a number >= 0"),
    ({"mv-a": math.nan}, "must be a number >= 0"),
    ({"mv-a": math.inf}, "must be a number >= 0"),
    ({"mv-a": True}, "must be a number >= 0"),
    ({"mv-a": "80"}, "must be a number >= 0"),
    ({"mv-a": 0, "c": 0}, "must not all be 0"),
    ({"c": 1, "mv-c": 2}, "given two weights"),
    ({}, "give at least one weight"),
])
def test_reweight_refuses_bad_input(weights, message):
    with pytest.raises(OikyoError, match=message):
        reweight([A, B, C], weights)


# ----------------------------------------------------------------------------- the record


def _record(name: str, variants: list[Variant]) -> None:
    with db.session() as s:
        s.add(Deployment(name=name, model=variants[0].model, variants=[v.to_dict() for v in variants],
                         host="127.0.0.1", port=1, settings={}, state="stopped", created_at=utcnow()))


def test_set_weights_updates_only_the_weights_and_records_an_event(workspace):
    _record("exp", [A, B])
    info = deployments.set_weights("exp", {"mv-a": 80, "mv-b": 20})
    assert info["variants"] == [{"label": "mv-a", "model": "mv-a", "weight": 80.0},
                                {"label": "mv-b", "model": "mv-b", "weight": 20.0}]
    assert deployments.get("exp").model == "mv-a"
    (event,) = events.list_events("exp")
    assert (event.kind, event.source) == ("split_changed", "oikyo")
    assert "mv-a=80, mv-b=20" in event.title and "was mv-a=100, mv-b=0" in event.title
    assert event.details["live"] is True and event.details["before"][1]["weight"] == 0
    deployments.set_weights("exp", {"mv-b": 20})  # nothing changes: no event
    assert len(events.list_events("exp")) == 1


def test_set_weights_with_bad_input_writes_nothing(workspace):
    _record("exp", [A, B])
    for weights in ({"mv-x": 1}, {"mv-a": 0}, {"mv-a": -5, "mv-b": 10}):
        with pytest.raises(OikyoError):
            deployments.set_weights("exp", weights)
    assert deployments.get("exp").variants == [A.to_dict(), B.to_dict()]
    assert events.list_events("exp") == []
    with pytest.raises(OikyoError, match="no deployment named"):
        deployments.set_weights("nope", {"mv-a": 1})


def test_set_split_with_the_same_models_only_reweights(workspace, versions):
    a, b = versions["support"], versions["sales"]
    deployments._save("exp", None, variants=deployments.make_variants(None, f"{a}=100,{b}=0"), host=None, port=1,
                      replicas=None, log_requests=None, engine=None, settings=None)
    info = deployments.set_split("exp", f"{b}=70,{a}=30")  # another order: the recorded order stays
    assert info["restarted"] is False
    assert [(v["label"], v["weight"]) for v in info["variants"]] == [(a, 30.0), (b, 70.0)]
    assert events.list_events("exp")[0].details["live"] is True
    info = deployments.set_split("exp", f"{a}=100")  # another set of models: a change of split
    assert [v["label"] for v in info["variants"]] == [a] and info["restarted"] is False  # it was stopped
    assert events.list_events("exp")[0].details["live"] is False


# ----------------------------------------------------------------------------- the router


def _routing(variants):
    from oikyo.serve.gateway.router import Routing

    pool = object()
    return Routing("bot", variants, {"dir": pool}, {v.label: "dir" for v in variants}, {})


def test_routing_follows_weight_changes_and_refuses_other_models(caplog):
    routing = _routing([A, B])
    first = routing.weights_applied_at
    assert routing.follow([A.to_dict(), B.to_dict()]) is None
    assert routing.fixed("bot", "alice").variant == "mv-a"
    assert routing.follow([{**A.to_dict(), "weight": 0}, {**B.to_dict(), "weight": 100}]) == "applied"
    assert {routing.fixed("bot", f"u{i}").variant for i in range(200)} == {"mv-b"}
    assert routing.fixed("mv-a", None).variant == "mv-a"  # a zero-weight variant named directly still serves
    assert routing.weights_applied_at > first
    (entry,) = routing.model_list()
    assert [v["weight"] for v in entry["variants"]] == [0, 100]
    assert entry["weights_applied_at"] == routing.weights_applied_at.isoformat()
    other = [A.to_dict(), C.to_dict()]
    with caplog.at_level("WARNING", logger="oikyo.serve.gateway.router"):
        assert routing.follow(other) == "restart"
        assert routing.follow(other) == "restart"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "restart" in warnings[0]  # logged once, not on every tick
    assert [v.label for v in routing.variants] == ["mv-a", "mv-b"]  # still serving what it has
    assert routing.follow([{**A.to_dict(), "weight": 0}, {**B.to_dict(), "weight": 100}]) is None


# ----------------------------------------------------------------------------- a real deployment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_running_deployment_moves_its_traffic_without_a_restart(versions):
    a, b = versions["support"], versions["sales"]
    name = "canary"
    try:
        info = deployments.deploy(None, name=name, split=f"{a}=100,{b}=0", port=_free_port(), wait_s=240)
        pid = deployments.get(name).pid
        _, secret = keys.create(name)
        http = httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {secret}"}, timeout=60,
                            trust_env=False)
        outcomes: list[tuple[float, str | None, int]] = []  # (sent at, variant, status)
        stop = threading.Event()

        def traffic(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                body = {"model": name, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
                if i:  # one client without a user (random by weight), one with a new user each time (sticky)
                    body["user"] = f"user-{i}-{n}"
                try:
                    answer = http.post("/chat/completions", json=body)
                    outcomes.append((sent, answer.headers.get("x-oikyo-variant"), answer.status_code))
                except httpx.HTTPError:
                    outcomes.append((sent, None, 0))

        threads = [threading.Thread(target=traffic, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(outcomes) >= 6, timeout=60)
            changed_at = time.monotonic()
            deployments.set_weights(name, {a: 0, b: 100})

            def applied():
                entry = next(m for m in http.get("/models").json()["data"] if m["id"] == name)
                return [v["weight"] for v in entry["variants"]] == [0, 100] and entry
            entry = wait_for(applied, timeout=2, interval=0.05)
            wait_for(lambda: sum(1 for o in outcomes if o[0] > changed_at + 2) >= 6, timeout=60)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert entry["weights_applied_at"]
        assert all(status == 200 for _, _, status in outcomes), [o for o in outcomes if o[2] != 200]
        assert {v for sent, v, _ in outcomes if sent < changed_at} == {a}
        assert {v for sent, v, _ in outcomes if sent > changed_at + 2} == {b}
        direct = http.post("/chat/completions", json={"model": a, "max_tokens": 2,
                                                       "messages": [{"role": "user", "content": "hi"}]})
        assert direct.status_code == 200 and direct.headers["x-oikyo-variant"] == a  # weight 0, still loaded
        assert deployments.get(name).pid == pid and deployments.status(deployments.get(name)) == "running"
        assert events.list_events(name, kinds=["split_changed"])[0].details["after"][1]["weight"] == 100
    finally:
        deployments.stop(name, timeout_s=30)
