"""Models over the REST API: the base-model catalog, adding a local model, model versions and lineage."""

from __future__ import annotations

import json

import pytest

API = "/api/v1"


def test_the_catalog_lists_the_bundled_model_first(api):
    from oikyo.models import catalog

    models = api.get(f"{API}/models").json()
    assert models[0]["name"] == catalog.BUNDLED_NAME and models[0]["source"] == "bundled"


def test_add_a_local_model_then_describe_it_with_an_estimate(api, tiny_model_dir):
    response = api.post(f"{API}/models", json={"source": str(tiny_model_dir), "name": "tiny"})
    assert response.status_code == 201, response.text
    added = response.json()
    assert added["name"] == "tiny" and added["source"] == "local" and added["parameters"] > 0
    assert [m["name"] for m in api.get(f"{API}/models").json()][1:] == ["tiny"]

    shown = api.get(f"{API}/models/tiny", params={"method": "full", "batch_size": 2, "max_length": 64, "tokens": 0})
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["model"]["parameters"] == added["parameters"] and body["model"]["context_length"]
    assert body["estimate"]["memory_bytes"]["total"] > 0 and body["estimate"]["fits"] in (True, False, None)
    lora = api.get(f"{API}/models/tiny", params={"tokens": 0}).json()["estimate"]
    assert lora["memory_bytes"]["gradients_and_optimizer"] < body["estimate"]["memory_bytes"]["gradients_and_optimizer"]

    # The same name twice is refused; the catalog is unchanged.
    again = api.post(f"{API}/models", json={"source": str(tiny_model_dir), "name": "tiny"})
    assert again.status_code == 400 and "already in the catalog" in again.json()["error"]["message"]


def test_a_folder_that_is_not_a_model_is_refused(api, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    response = api.post(f"{API}/models", json={"source": str(folder)})
    assert response.status_code == 400 and "config.json" in response.json()["error"]["message"]


def test_unknown_models_are_404(api, tmp_path):
    assert api.get(f"{API}/models/no-such-model").status_code == 404
    # A folder name is not a catalog name: the API never describes arbitrary folders.
    assert api.get(f"{API}/models/tmp").status_code == 404
    assert api.get(f"{API}/models/tiny", params={"method": "bogus"}).status_code == 422


@pytest.fixture
def lineage_records(tmp_path):
    """A dataset version, a finished run on it, its adapter model version, an evaluation of that
    version and a deployment serving it, written straight to the store."""
    from oikyo.data import versions
    from oikyo.jobs import model_versions
    from oikyo.store import db
    from oikyo.store.models import Deployment, Evaluation, Run

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(5)))
    dataset = versions.import_dataset(data, name="lineage-data").version
    with db.session() as s:
        s.add(Run(id="run-0001", name="lineage-run", state="succeeded", kind="train", config={"lr": 1},
                  config_hash="c0ffee" * 4, dataset_version_id=dataset.id, base_model="tiny", seed=7,
                  run_dir=str(tmp_path / "run")))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    mv = model_versions.register("run-0001", adapter)
    other = model_versions.register("run-0001", adapter)  # a second version: not in the deployment
    with db.session() as s:
        s.add(Evaluation(id="ev-0001", group_id="g1", role="model", model_ref=mv.id, model_version_id=mv.id,
                         base_model="tiny", dataset_version_id=dataset.id, rows=5, metrics={"loss": 1.5}))
        s.add(Deployment(name="serving-it", model=mv.id, variants=[{"label": mv.id, "model": mv.id, "weight": 100.0}],
                         host="127.0.0.1", port=8999, state="stopped"))
    return {"dataset": dataset, "mv": mv, "other": other}


def test_model_versions_list_and_filters(api, lineage_records):
    mv, other = lineage_records["mv"], lineage_records["other"]
    listed = api.get(f"{API}/model-versions").json()
    assert {v["id"] for v in listed} == {mv.id, other.id}
    assert len(api.get(f"{API}/model-versions", params={"run": "run-0001"}).json()) == 2
    assert api.get(f"{API}/model-versions", params={"run": "run-9999"}).json() == []
    assert len(api.get(f"{API}/model-versions", params={"base": "tiny"}).json()) == 2


def test_model_version_lineage_from_dataset_to_deployment(api, lineage_records):
    mv, dataset = lineage_records["mv"], lineage_records["dataset"]
    response = api.get(f"{API}/model-versions/{mv.id}")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["id"] == mv.id and info["kind"] == "adapter" and info["base_model"] == "tiny"
    assert info["dataset"]["id"] == dataset.id and info["dataset"]["content_hash"] == dataset.content_hash
    assert info["run"]["id"] == "run-0001" and info["config_hash"] == "c0ffee" * 4
    assert [e["id"] for e in info["evaluations"]] == ["ev-0001"]
    assert info["evaluations"][0]["metrics"] == {"loss": 1.5}
    assert [d["name"] for d in info["deployments"]] == ["serving-it"]
    # The other version has the same run and dataset but no evaluations or deployments.
    other = api.get(f"{API}/model-versions/{lineage_records['other'].id}").json()
    assert other["evaluations"] == [] and other["deployments"] == [] and other["dataset"]["id"] == dataset.id
    # As on the CLI, the "mv-" may be left out.
    assert api.get(f"{API}/model-versions/{mv.id.removeprefix('mv-')}").json()["id"] == mv.id


def test_unknown_model_version_is_404(api):
    response = api.get(f"{API}/model-versions/mv-doesnotexist")
    assert response.status_code == 404
    assert "no model version matches" in response.json()["error"]["message"]
