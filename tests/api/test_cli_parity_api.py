"""Routes that mirror the remaining CLI commands: runs reproduce, models merge/remove, data eval-set, ab-report."""

from __future__ import annotations

import pytest

from oikyo.jobs import runs


def _dataset(api, tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(
        f'{{"messages": [{{"role": "user", "content": "q{i}"}}, {{"role": "assistant", "content": "a{i}"}}]}}\n'
        for i in range(12)))
    with path.open("rb") as handle:
        answer = api.post("/api/v1/datasets", files={"file": ("chat.jsonl", handle)}, data={"name": "chat"})
    assert answer.status_code == 201, answer.text
    return answer.json()["version"]


def test_eval_set_mark_and_unmark(api, tmp_path):
    version = _dataset(api, tmp_path)
    marked = api.put(f"/api/v1/datasets/{version['id']}/eval-set", json={"eval_set": True})
    assert marked.status_code == 200 and marked.json()["eval_set"] is True
    unmarked = api.put(f"/api/v1/datasets/{version['id']}/eval-set", json={"eval_set": False})
    assert unmarked.json()["eval_set"] is False
    assert api.put("/api/v1/datasets/nosuch/eval-set", json={"eval_set": True}).status_code == 404


def test_reproduce_queues_a_new_run_from_the_record(api, tmp_path, tiny_model_dir):
    version = _dataset(api, tmp_path)
    config = {"model": {"name": str(tiny_model_dir)}, "data": {"dataset": version["id"], "train_split": None,
                                                              "eval_split": None}, "train": {"max_steps": 2}}
    first = api.post("/api/v1/runs", json={"config": config, "start_worker": False})
    assert first.status_code == 201, first.text
    again = api.post(f"/api/v1/runs/{first.json()['id']}/reproduce", json={"start_worker": False})
    assert again.status_code == 201, again.text
    record = runs.resolve(again.json()["id"])
    assert record.reproduced_from == first.json()["id"] and record.state == "queued"
    assert record.dataset_version_id == runs.resolve(first.json()["id"]).dataset_version_id == version["id"]
    assert api.post("/api/v1/runs/run-ffffffff/reproduce", json={}).status_code == 404


def test_merge_and_remove_refuse_unknown_refs(api):
    assert api.post("/api/v1/model-versions/mv-ffffffff/merge").status_code == 404
    assert api.delete("/api/v1/models/nosuch").status_code == 404


def test_remove_a_catalog_model(api, tiny_model_dir):
    added = api.post("/api/v1/models", json={"source": str(tiny_model_dir), "name": "tiny"})
    assert added.status_code == 201, added.text
    assert api.delete("/api/v1/models/tiny").json() == {"removed": "tiny"}
    assert "tiny" not in {m["name"] for m in api.get("/api/v1/models").json()}


@pytest.mark.parametrize("path", ["/api/v1/deployments/nosuch/ab-report"])
def test_ab_report_of_an_unknown_deployment_is_404(api, path):
    assert api.get(path).status_code == 404
