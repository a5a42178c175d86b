"""The loop's REST routes (`oikyo loop` over HTTP) and the controller that runs beside the platform server."""

from __future__ import annotations

import threading
import time

import pytest
from typer.testing import CliRunner

API = "/api/v1"
CHAMPION = "mv-champion1"


def _policy(deployment: str = "bot", **extra) -> dict:
    return {"deployment": deployment, "triggers": {"new_examples": 10},
            "train": {"config": {"train": {"max_steps": 2}}}, "gate": {"dataset": "gate-set"}, **extra}


@pytest.fixture
def deployment(workspace) -> str:
    from oikyo.store import db
    from oikyo.store.models import Deployment

    with db.session() as s:
        s.add(Deployment(name="bot", model=CHAMPION, variants=[{"label": CHAMPION, "model": CHAMPION, "weight": 100}],
                         host="127.0.0.1", port=8999, state="stopped"))
    return "bot"


@pytest.fixture
def applied(deployment) -> str:
    from oikyo.loop import policy, records

    records.apply(policy.parse(_policy(deployment)))
    return deployment


def test_no_policies_yet(api, deployment):
    assert api.get(f"{API}/loop").json() == []
    for path in (f"{API}/loop/bot", f"{API}/loop/nosuch"):  # no policy, no deployment: both 404
        answer = api.get(path)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["message"]
    for action in ("trigger", "pause", "resume", "cancel"):
        assert api.post(f"{API}/loop/bot/{action}").status_code == 404
        assert api.post(f"{API}/loop/nosuch/{action}").status_code == 404


def test_apply_a_policy_and_read_it_back(api, deployment):
    answer = api.put(f"{API}/loop/bot/policy", json=_policy())
    assert answer.status_code == 200, answer.text
    applied = answer.json()
    assert applied["deployment"] == "bot" and applied["paused"] is False
    assert applied["policy"]["triggers"]["new_examples"] == 10
    assert applied["policy"]["canary"]["share"] == 0.2  # defaults filled in, as `oikyo loop apply` stores them

    listed = api.get(f"{API}/loop").json()
    assert [entry["deployment"] for entry in listed] == ["bot"]
    assert listed[0]["cycles"] == [] and listed[0]["open_cycle"] is None

    shown = api.get(f"{API}/loop/bot").json()
    assert shown["policy"]["gate"]["dataset"] == "gate-set"
    assert [d["action"] for d in shown["decisions"]] == ["policy_applied"]

    # The deployment may be left out of the body (the path names it); applying again replaces it.
    body = _policy()
    del body["deployment"]
    body["canary"] = {"share": 0.1}
    again = api.put(f"{API}/loop/bot/policy", json=body)
    assert again.status_code == 200, again.text
    assert api.get(f"{API}/loop/bot").json()["policy"]["canary"]["share"] == 0.1


@pytest.mark.parametrize("body, fields", [
    (_policy("other"), ["deployment"]),
    ({**_policy(), "triggers": {}}, [None]),  # a check of the whole policy: at least one trigger
    ({**_policy(), "canary": {"share": 2}, "rollback": {"alpha": 0}}, ["canary.share", "rollback.alpha"]),
    ({**_policy(), "gate": {}, "surprise": 1}, ["gate.dataset", "surprise"]),
    ({**_policy(), "train": {"config": "configs/bot.yaml"}}, ["train.config"]),
])
def test_a_policy_that_does_not_validate_is_422_with_every_problem(api, deployment, body, fields):
    answer = api.put(f"{API}/loop/bot/policy", json=body)
    assert answer.status_code == 422, answer.text
    problems = answer.json()["error"]["problems"]
    assert [p["field"] for p in problems] == fields, problems
    assert api.get(f"{API}/loop").json() == []  # nothing stored


def test_policy_body_shape_and_unknown_deployment(api, deployment):
    assert api.put(f"{API}/loop/bot/policy", json=[1, 2]).status_code == 422
    assert api.put(f"{API}/loop/bot/policy", content=b"not json",
                   headers={"Content-Type": "application/json"}).status_code == 422
    assert api.put(f"{API}/loop/nosuch/policy", json=_policy("nosuch")).status_code == 404
    assert api.get(f"{API}/loop/..%2F..%2Fetc").status_code in (400, 404)


def test_pause_and_resume(api, applied):
    paused = api.post(f"{API}/loop/bot/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert api.get(f"{API}/loop").json()[0]["paused"] is True
    assert api.post(f"{API}/loop/bot/resume").json()["paused"] is False
    actions = [d["action"] for d in api.get(f"{API}/loop/bot").json()["decisions"]]
    assert actions == ["resumed", "paused", "policy_applied"]  # newest first


def test_trigger_and_cancel_a_cycle(api, applied):
    started = api.post(f"{API}/loop/bot/trigger", json={"reason": "new data arrived"})
    assert started.status_code == 201, started.text
    cycle = started.json()
    assert cycle["state"] == "collecting" and cycle["trigger"] == "manual" and cycle["champion"] == CHAMPION
    assert cycle["reason"] == "new data arrived"
    assert api.post(f"{API}/loop/bot/trigger").status_code == 409  # one cycle at a time

    shown = api.get(f"{API}/loop/bot").json()
    assert shown["open_cycle"]["id"] == cycle["id"] and [c["id"] for c in shown["cycles"]] == [cycle["id"]]

    cancelled = api.post(f"{API}/loop/bot/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"]
    assert api.post(f"{API}/loop/bot/cancel").status_code == 409  # nothing running any more
    shown = api.get(f"{API}/loop/bot").json()
    assert shown["open_cycle"] is None
    assert [d["action"] for d in shown["decisions"]][:2] == ["cancelled", "triggered"]


def test_the_loop_routes_need_auth(anon, applied):
    assert anon.get(f"{API}/loop").status_code == 401
    assert anon.post(f"{API}/loop/bot/trigger").status_code == 401


# ----------------------------------------------------------------------------- the server's controller


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "oikyo-loop-controller" and t.is_alive()]


def test_the_app_runs_no_controller_unless_asked(api, app):
    assert app.state.loop is False and app.state.loop_runner is None
    assert not _loop_threads()


def test_the_server_controller_acts_on_a_policy_and_stops_with_the_server(token, applied):
    from fastapi.testclient import TestClient

    from oikyo.api.app import create_app
    from oikyo.loop import controller, records

    cycle = controller.trigger_now("bot")  # a cycle waiting for a controller
    app = create_app(token, loop=True)
    with TestClient(app):
        runner = app.state.loop_runner
        assert runner is not None and runner.alive
        deadline = time.monotonic() + 30
        while records.get_cycle(cycle.id).state == "collecting" and time.monotonic() < deadline:
            time.sleep(0.05)
        # No traffic logged: the controller's first step ends the cycle as skipped, and says why.
        assert records.get_cycle(cycle.id).state == "skipped"
        assert any(d.action == "skipped" and d.cycle_id == cycle.id for d in records.history("bot"))
    assert not runner.alive and not _loop_threads()
    assert records.get_record("bot").owner is None  # the stopped controller gave its lease back


@pytest.fixture
def served(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    monkeypatch.delenv("OIKYO_LOOP", raising=False)
    return calls


@pytest.mark.parametrize("args, env, wanted", [([], None, True), (["--no-loop"], None, False),
                                              ([], "0", False), ([], "1", True)])
def test_oikyo_ui_runs_the_loop_unless_turned_off(served, workspace, monkeypatch, args, env, wanted):
    from oikyo.cli.main import app

    if env is not None:
        monkeypatch.setenv("OIKYO_LOOP", env)
    result = CliRunner().invoke(app, ["ui", *args])
    assert result.exit_code == 0, result.output
    assert served[0].state.loop is wanted
    assert ("loop controller is off" in result.output) is not wanted


def test_the_loop_routes_are_in_the_openapi_spec(api):
    spec = api.get(f"{API}/openapi.json").json()
    paths = {path: set(ops) for path, ops in spec["paths"].items() if path.startswith(f"{API}/loop")}
    assert paths == {f"{API}/loop": {"get"}, f"{API}/loop/{{deployment}}": {"get"},
                     f"{API}/loop/{{deployment}}/policy": {"put"},
                     **{f"{API}/loop/{{deployment}}/{a}": {"post"} for a in ("trigger", "pause", "resume", "cancel")}}
    assert all(op.get("description") for ops in spec["paths"].values() for op in ops.values()
               if op.get("tags") == ["loop"])
