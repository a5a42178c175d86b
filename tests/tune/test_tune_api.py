"""The REST routes over studies (read-only): list, one study's report, its plots as PNG files."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from oikyo.tune import study

from studyhelpers import WorkerThreads, new_study, tune_env  # noqa: F401

pytestmark = pytest.mark.usefixtures("tune_env")
TOKEN = "test-login-token-0123456789"


@pytest.fixture
def api():
    from oikyo.api.app import create_app

    with TestClient(create_app(TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def finished_study(tmp_path):
    import jobhelpers

    dataset = jobhelpers.make_dataset(tmp_path)
    model_dir = jobhelpers.make_model_dir(tmp_path / "fake-model")
    threads = WorkerThreads(1)
    try:
        record = new_study(dataset, model_dir, n_trials=3, sampler="random", name="api-sweep")
        study.run_study(record.id, log=lambda line: None, poll_s=0.02)
    finally:
        threads.stop()
    return record


def test_studies_list_report_and_plots(api, finished_study):
    listed = api.get("/api/v1/studies")
    assert listed.status_code == 200
    [info] = listed.json()["studies"]
    assert info["name"] == "api-sweep" and info["counts"] == {"complete": 3}

    shown = api.get(f"/api/v1/studies/{finished_study.id}")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["summary"]["counts"]["complete"] == 3 and body["summary"]["best"]["number"] in (0, 1, 2)
    assert [t["number"] for t in body["trials"]] == [0, 1, 2] and len(body["history"]) == 3
    assert "history" in body["plots"]

    plot = api.get("/api/v1/studies/api-sweep/plots/history.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_studies_and_plots_are_4xx(api, finished_study):
    assert api.get("/api/v1/studies/st-ffffffff").status_code == 404
    missing = api.get("/api/v1/studies/api-sweep/plots/no_such_plot")
    assert missing.status_code == 404 and "history" in missing.json()["error"]["message"]
    assert api.get("/api/v1/studies/api-sweep/plots/..%2Fetc").status_code in (400, 404)
    assert TestClient(api.app).get("/api/v1/studies").status_code == 401
