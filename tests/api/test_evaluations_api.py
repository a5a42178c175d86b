"""The evaluations API: stored evaluations (seeded by hand) listed and shown, compare with bootstrap CIs and
a verdict, the leaderboard, and submitting an evaluation job on the tiny model."""

from __future__ import annotations

import pytest
from evalseed import add_model_version, make_json_dataset, seed_evaluation

API = "/api/v1"


@pytest.fixture
def evaluated(tmp_path):
    """Two model versions on the same 20 test prompts: A right on 18, B on 5."""
    dataset = make_json_dataset(tmp_path)
    a, b = add_model_version("mv-000000aa", lr=2e-4), add_model_version("mv-000000bb", lr=1e-2)
    ev_b = seed_evaluation(dataset, b, 5)
    ev_a = seed_evaluation(dataset, a, 18)
    return dataset, a, b, ev_a, ev_b


def test_list_and_show_evaluations(api, evaluated):
    dataset, a, b, ev_a, ev_b = evaluated
    listed = api.get(f"{API}/evaluations").json()
    assert {e["id"] for e in listed} == {ev_a.id, ev_b.id}
    assert [e["id"] for e in api.get(f"{API}/evaluations", params={"model": a}).json()] == [ev_a.id]
    assert len(api.get(f"{API}/evaluations", params={"dataset": f"{dataset.name}:test"}).json()) == 2
    assert api.get(f"{API}/evaluations", params={"dataset": dataset.name, "split": "validation"}).json() == []
    twice = api.get(f"{API}/evaluations", params={"dataset": f"{dataset.name}:test", "split": "train"})
    assert twice.status_code == 400 and "given twice" in twice.json()["error"]["message"]

    shown = api.get(f"{API}/evaluations/{ev_a.id[3:]}", params={"examples": 3, "offset": 1}).json()
    assert shown["id"] == ev_a.id and shown["metrics"] == {"exact_match": 0.9} and shown["system"] == a
    assert shown["examples_total"] == 20 and [r["index"] for r in shown["examples"]] == [1, 2, 3]
    assert shown["group"] == [{"id": ev_a.id, "role": "model", "system": a, "metrics": {"exact_match": 0.9}}]
    missing = api.get(f"{API}/evaluations/ev-nothere")
    assert missing.status_code == 404 and "no evaluation matches" in missing.json()["error"]["message"]
    assert api.get(f"{API}/evaluations/..%5Cx").status_code == 400


def test_compare_two_models(api, evaluated):
    dataset, a, b, ev_a, ev_b = evaluated
    response = api.post(f"{API}/compare", json={"a": a, "b": b, "dataset": f"{dataset.name}:test",
                                                 "resamples": 500, "examples": 3})
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["a"]["id"] == ev_a.id and report["b"]["id"] == ev_b.id and report["paired_examples"] == 20
    exact = report["metrics"]["exact_match"]
    assert exact["delta"] == pytest.approx(0.65) and exact["low"] > 0 and exact["significant"]
    assert exact["verdict"] == f"{a} is better"
    assert len(report["examples"]) == 3 and all(e["score_a"] != e["score_b"] for e in report["examples"])
    assert report["config_diff"] == {"train.lr": [2e-4, 1e-2]}
    # The same seed gives the same interval; the reverse comparison mirrors it.
    again = api.post(f"{API}/compare", json={"a": a, "b": b, "resamples": 500}).json()["metrics"]["exact_match"]
    assert (again["low"], again["high"]) == (exact["low"], exact["high"])
    reverse = api.post(f"{API}/compare", json={"a": b, "b": a, "resamples": 500}).json()["metrics"]["exact_match"]
    assert reverse["delta"] == pytest.approx(-0.65) and reverse["verdict"] == f"{a} is better"

    same = api.post(f"{API}/compare", json={"a": a, "b": a})
    assert same.status_code == 400 and "the same" in same.json()["error"]["message"]
    unknown = api.post(f"{API}/compare", json={"a": a, "b": "mv-nothere"})
    assert unknown.status_code == 404
    nothing_shared = api.post(f"{API}/compare", json={"a": a, "b": b, "split": "validation"})
    assert nothing_shared.status_code == 400
    assert "no evaluation on a common" in nothing_shared.json()["error"]["message"]
    assert api.post(f"{API}/compare", json={"a": a, "b": b, "resamples": 5}).status_code == 422


def test_leaderboard(api, evaluated):
    dataset, a, b, ev_a, ev_b = evaluated
    board = api.get(f"{API}/leaderboard", params={"dataset": dataset.name}).json()
    assert board["metric"] == "exact_match" and board["higher_is_better"] is True
    assert [(r["rank"], r["system"], r["value"]) for r in board["rows"]] == [(1, a, 0.9), (2, b, 0.25)]
    assert api.get(f"{API}/leaderboard", params={"dataset": f"{dataset.id}:test"}).json()["split"] == "test"
    unknown_metric = api.get(f"{API}/leaderboard", params={"dataset": dataset.name, "metric": "bleu"})
    assert unknown_metric.status_code == 400 and "has the metric 'bleu'" in unknown_metric.json()["error"]["message"]
    assert api.get(f"{API}/leaderboard").status_code == 422  # the dataset is required
    assert api.get(f"{API}/leaderboard", params={"dataset": "no-such-data"}).status_code == 404


def test_submit_an_evaluation_job(api, tiny_model_dir, tmp_path):
    from oikyo.jobs import queue

    dataset = make_json_dataset(tmp_path)
    response = api.post(f"{API}/evaluations", json={"model": str(tiny_model_dir), "dataset": f"{dataset.name}:test",
                                                    "max_new_tokens": 4, "start_worker": False})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "eval" and job["state"] == "queued" and job["dataset_version"] == dataset.id
    assert job["worker"]["started_pid"] is None
    assert queue.get(job["id"]).config["split"] == "test"
    assert [r["id"] for r in api.get(f"{API}/runs").json()] == [job["id"]]  # in the shared queue

    unknown = api.post(f"{API}/evaluations", json={"model": "mv-nothere", "dataset": dataset.name,
                                                   "start_worker": False})
    assert unknown.status_code in (400, 404) and "mv-nothere" in unknown.json()["error"]["message"]
    no_split = api.post(f"{API}/evaluations", json={"model": str(tiny_model_dir), "dataset": dataset.name,
                                                    "split": "nope", "start_worker": False})
    assert no_split.status_code == 400 and "has no 'nope' rows" in no_split.json()["error"]["message"]
    assert api.post(f"{API}/evaluations", json={"dataset": dataset.name}).status_code == 422  # no model
    assert len(api.get(f"{API}/runs").json()) == 1  # nothing else was queued
