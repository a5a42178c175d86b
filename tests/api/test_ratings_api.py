"""The human rating API: a blind session over two models' stored answers, one rating per pair, the win rate
with its interval, and the refusals (unknown pair 404, second rating 409, bad choice 422, no evaluation)."""

from __future__ import annotations

import pytest
from evalseed import KEYS, add_model_version, make_json_dataset, seed_evaluation

API = "/api/v1"


@pytest.fixture
def models(tmp_path):
    dataset = make_json_dataset(tmp_path)
    a, b = add_model_version("mv-000000aa"), add_model_version("mv-000000bb")
    seed_evaluation(dataset, a, 0, keys=KEYS[:8])  # answers "mv-000000aa guesses keyNN"
    seed_evaluation(dataset, b, 0, keys=KEYS[:8])
    return dataset, a, b


def _pick(pair: dict, model: str) -> str:
    return "left" if pair["left"].startswith(model) else "right"


def test_a_blind_session_rated_to_a_win_rate(api, models):
    dataset, a, b = models
    created = api.post(f"{API}/ratings/sessions", json={"a": a, "b": b, "dataset": f"{dataset.name}:test",
                                                         "seed": 11})
    assert created.status_code == 201, created.text
    session = created.json()
    pairs = session["pairs"]
    assert len(pairs) == 8 and session["remaining"] == 8
    for pair in pairs:
        assert set(pair) == {"pair_id", "position", "prompt", "left", "right", "choice"}
        assert {pair["left"].split()[0], pair["right"].split()[0]} == {a, b}
    assert len({_pick(p, a) for p in pairs}) == 2  # A is on the left for some pairs, on the right for others
    assert "a_on_left" not in created.text and "winner" not in created.text

    # A wins 5, B wins 1, 2 ties: (5 + 1) / 8 = 0.75.
    plan = [a] * 5 + [b] + ["tie"] * 2
    for pair, winner in zip(pairs, plan):
        choice = "tie" if winner == "tie" else _pick(pair, winner)
        rated = api.post(f"{API}/ratings", json={"pair_id": pair["pair_id"], "choice": choice})
        assert rated.status_code == 200, rated.text
        assert set(rated.json()) == {"pair_id", "choice", "session_id", "rated", "remaining"}
    assert rated.json()["remaining"] == 0

    summary = api.get(f"{API}/ratings/summary", params={"a": a, "b": b}).json()
    assert (summary["wins_a"], summary["wins_b"], summary["ties"], summary["n"]) == (5, 1, 2, 8)
    assert summary["win_rate_a"] == pytest.approx(0.75)
    # Wilson, n = 8, p = 0.75, z = 1.959964: centre 0.668898, half 0.259623.
    assert summary["ci95"] == pytest.approx([0.668898 - 0.259623, 0.668898 + 0.259623], abs=1e-5)
    by_session = api.get(f"{API}/ratings/summary", params={"a": b, "b": a, "session": session["session_id"]}).json()
    assert by_session["win_rate_a"] == pytest.approx(0.25)

    shown = api.get(f"{API}/ratings/sessions/{session['session_id']}").json()
    assert shown["rated"] == 8 and [p["choice"] for p in shown["pairs"]][-2:] == ["tie", "tie"]
    assert api.get(f"{API}/ratings/sessions").json()[0]["rated"] == 8


def test_refusals(api, models, tmp_path):
    dataset, a, b = models
    session = api.post(f"{API}/ratings/sessions", json={"a": a, "b": b, "dataset": dataset.name, "n": 2}).json()
    pair = session["pairs"][0]
    assert api.post(f"{API}/ratings", json={"pair_id": pair["pair_id"], "choice": "left"}).status_code == 200
    twice = api.post(f"{API}/ratings", json={"pair_id": pair["pair_id"], "choice": "right"})
    assert twice.status_code == 409 and "already rated" in twice.json()["error"]["message"]
    unknown = api.post(f"{API}/ratings", json={"pair_id": "rp-000000000000", "choice": "left"})
    assert unknown.status_code == 404 and "unknown rating pair" in unknown.json()["error"]["message"]
    assert api.post(f"{API}/ratings", json={"pair_id": pair["pair_id"], "choice": "both"}).status_code == 422
    assert api.post(f"{API}/ratings", json={"pair_id": "../x", "choice": "left"}).status_code == 400
    assert api.get(f"{API}/ratings/sessions/rs-nothere").status_code == 404

    lonely = add_model_version("mv-000000cc")
    refused = api.post(f"{API}/ratings/sessions", json={"a": a, "b": lonely, "dataset": dataset.name})
    assert refused.status_code == 400 and "mv-000000cc has no evaluations yet" in refused.json()["error"]["message"]
    other = make_json_dataset(tmp_path, name="other", n=20)  # other rows: another version
    seed_evaluation(other, lonely, 1, keys=KEYS[:3])
    elsewhere = api.post(f"{API}/ratings/sessions", json={"a": a, "b": lonely, "dataset": dataset.name})
    assert elsewhere.status_code == 400
    assert "has no stored evaluation on items@" in elsewhere.json()["error"]["message"]


def test_browser_ratings_need_the_csrf_token(browser_client, anon, models):
    dataset, a, b = models
    assert anon.post(f"{API}/ratings/sessions", json={"a": a, "b": b, "dataset": dataset.name}).status_code == 401
    body = {"a": a, "b": b, "dataset": dataset.name}
    assert browser_client.post(f"{API}/ratings/sessions", json=body).status_code == 403
    session = browser_client.post(f"{API}/ratings/sessions", json=body, headers={"X-CSRF-Token": browser_client.csrf})
    assert session.status_code == 201
