"""The Studies pages: the list, one study's report (trials, best trial, importances, plots), the login
guard, a 404 for an unknown study, escaping; and, in a real browser, a running study's page gaining
trials without a reload.

Studies are real: the fake training recipe of tests/jobs trains each trial in well under a second
(see tests/tune/studyhelpers.py).
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest
from browserhelpers import TOKEN
from fastapi.testclient import TestClient
from jobhelpers import make_dataset, make_model_dir, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tune"))
from studyhelpers import WorkerThreads, new_study, tune_env  # noqa: E402,F401

pytestmark = pytest.mark.usefixtures("tune_env")
PNG = b"\x89PNG\r\n\x1a\n"
NAME = "<i>lr</i> & sweep"  # a name a page must show as text, never as markup


@pytest.fixture
def app():
    from oikyo.api.app import create_app

    return create_app(TOKEN)


@pytest.fixture
def client(app):
    with TestClient(app) as logged_in:
        assert logged_in.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
        yield logged_in


@pytest.fixture
def inputs(tmp_path):
    return make_dataset(tmp_path), make_model_dir(tmp_path / "fake-model")


@pytest.fixture
def finished_study(inputs, monkeypatch):
    """Three trials (random sampler, seed 0: lr 5.5e-4, 3.8e-3, 1.0e-3); the second diverges and fails."""
    from oikyo.tune import study

    monkeypatch.setenv("FAKE_LOSS_FROM_LR", "1")  # eval_loss grows with |log10 lr + 4|: trial 0 is best
    monkeypatch.setenv("FAKE_FAIL_LR_ABOVE", "0.002")
    threads = WorkerThreads(1)
    try:
        record = new_study(*inputs, n_trials=3, sampler="random", pruner="none", name=NAME)
        study.run_study(record.id, log=lambda line: None, poll_s=0.02)
    finally:
        threads.stop()
    return record


def _section(html: str, element_id: str) -> str:
    """The page's HTML from the element with this id to the end of its card."""
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</section>", start)]


def test_studies_pages_need_a_session(app):
    with TestClient(app, follow_redirects=False) as anon:
        for path in ("/studies", "/studies/st-12345678"):
            response = anon.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login?next=" + path.replace("/", "%2F")


def test_the_list_says_how_to_start_a_study_until_there_is_one(client):
    response = client.get("/studies")
    assert response.status_code == 200 and 'class="empty"' in response.text
    assert "<code>oikyo tune --config base.yaml --dataset NAME --trials 20</code>" in response.text
    assert '<a href="/studies" class="active" aria-current="page">Studies</a>' in response.text
    assert 'href="/studies"' in client.get("/").text  # in the top bar of every page


def test_a_finished_study_in_the_list_and_on_its_page(client, finished_study, inputs):
    from oikyo.tune import study

    trials = {t["number"]: t for t in study.trials(finished_study.id)}
    assert [trials[n]["state"] for n in (0, 1, 2)] == ["complete", "failed", "complete"]  # what the fixture meant

    listed = client.get("/studies").text
    row = _section(listed, "studies-table")
    assert f'<a href="/studies/{finished_study.id}">&lt;i&gt;lr&lt;/i&gt; &amp; sweep</a>' in row
    assert "<i>lr</i>" not in listed
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[1:] == ["finished", "val_loss ↓", "3/3", "2", "0", "1", "#0", "just now"]

    response = client.get(f"/studies/{finished_study.id}")
    assert response.status_code == 200, response.text
    html = response.text
    assert "<i>lr</i>" not in html and "&lt;i&gt;lr&lt;/i&gt; &amp; sweep" in html
    assert '"live": false' in html  # finished: study.js asks nothing
    assert f'<a class="mono" href="/datasets/{inputs[0].id}">' in html  # the settings name its dataset

    table = _section(html, "trials-table")
    states = dict(re.findall(r'data-trial="(\d+)" data-state="(\w+)"', table))
    assert states == {"0": "complete", "1": "failed", "2": "complete"}
    for trial in trials.values():
        for run_id in trial["run_ids"]:
            assert f'href="/runs/{run_id}"' in table
    failed_row = table[table.index('data-trial="1"'):table.index('data-trial="2"')]
    assert "diverged at step 2 (lr 0.00376658 is too high)" in failed_row  # the reason the driver recorded
    assert 'title="best"' in table[table.index('data-trial="0"'):table.index('data-trial="1"')]

    best = _section(html, "best")
    assert "#0" in best and f'href="/runs/{trials[0]["run_ids"][0]}"' in best and "#2" not in best
    assert "train.lr" in _section(html, "importances")

    images = re.findall(r'<img src="([^"]+)"', html)
    assert f"/api/v1/studies/{finished_study.id}/plots/history.png" in images
    for src in images:  # every plot shown answers a PNG
        plot = client.get(src)
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png", src
        assert plot.content.startswith(PNG), src
    assert "Not drawn yet: the study has one objective" in _section(html, "plots")  # pareto_front


def test_a_running_study_page_is_live_and_an_unknown_study_is_not_found(client, inputs):
    record = new_study(*inputs, n_trials=2, name="waiting-sweep")  # recorded, no driver yet
    html = client.get("/studies/waiting-sweep").text
    assert "No trial has started yet." in html and "0/2" in html
    assert '"live": true' in html and '"poll_ms": 3000' in html and "/static/study.js?v=" in html
    assert f'"id": "{record.id}"' in html

    missing = client.get("/studies/st-ffffffff")
    assert missing.status_code == 404 and "Not found" in missing.text and "st-ffffffff" in missing.text
    assert client.get("/studies/..%2F..%2Fetc").status_code in (400, 404)


def test_two_objectives_show_the_pareto_front_and_a_promotion_its_test_scores(client, inputs, tmp_path):
    import optuna
    import webseed

    from oikyo.store import db
    from oikyo.store.models import Evaluation, TunePromotion, utcnow
    from oikyo.tune import study

    record = new_study(*inputs, n_trials=3, objectives=["val_loss", "forgetting"], name="front")
    ostudy, lr = study.load_optuna(record), optuna.distributions.FloatDistribution(1e-6, 0.1, log=True)
    for value, values in ((1e-4, [1.0, 0.3]), (1e-3, [0.8, 0.5]), (1e-2, [1.2, 0.6])):  # #2 is dominated by #0
        ostudy.add_trial(optuna.trial.create_trial(params={"train.lr": value}, distributions={"train.lr": lr},
                                                   values=values, user_attrs={"values": {"train.lr": value}}))
    # Trial 0 promoted: trained again, then scored on the test split with its base (2 of 3 right, base 1 of 3).
    run, mv = webseed.finished_run(inputs[0], "smollm2-135m-instruct", name="promoted", lr=1e-4,
                                   run_dir=tmp_path / "runs")
    model = webseed.evaluate(inputs[0], mv, ["0", "2", "x"], ["0", "2", "4"])
    base = webseed.evaluate(inputs[0], mv, ["0", "x", "x"], ["0", "2", "4"])
    with db.session() as s:
        stored = s.get(Evaluation, base.id)
        stored.group_id, stored.role = model.group_id, "base"
        s.add(TunePromotion(id="tp-00000001", study_id=record.id, trial_number=0, params={"train.lr": 1e-4},
                            run_id=run.id, eval_job_id=model.group_id, state="done", created_at=utcnow()))

    html = client.get("/studies/front").text
    assert "minimize <b>val_loss</b>, minimize <b>forgetting</b>" in html
    front = _section(html, "pareto-table")
    rows = re.findall(r"<tr><td class=\"num\">#(\d+)</td>", front)
    assert rows == ["1", "0"]  # best val_loss first; #2 is dominated
    promotions = _section(html, "promotions-table")
    assert f'href="/runs/{run.id}"' in promotions and mv.id in promotions and "state-done" in promotions
    assert re.sub(r"<[^>]+>", "", promotions).count("exact_match 0.6667 (base 0.3333)") == 1
    pareto = client.get(f"/api/v1/studies/{record.id}/plots/pareto_front.png")
    assert f'<img src="/api/v1/studies/{record.id}/plots/pareto_front.png"' in html
    assert pareto.status_code == 200 and pareto.content.startswith(PNG)


@pytest.mark.browser
def test_a_running_study_shows_its_new_trials_without_a_reload(dash, inputs, monkeypatch):
    from oikyo.tune import study
    from oikyo.web import pages

    monkeypatch.setattr(pages, "STUDY_POLL_S", 0.5)
    monkeypatch.setenv("FAKE_STEP_TIME", "0.05")  # 20 steps: about a second per trial
    record = new_study(*inputs, n_trials=3, sampler="random", pruner="none", name="live-sweep")
    page = dash.page
    dash.login("/studies")
    row = page.locator("#studies-table tbody tr", has_text="live-sweep")
    assert "running" in row.inner_text() and "0/3" in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(f"{dash.url}/studies/{record.id}")
    assert "No trial has started yet." in page.inner_text("#trials-body")
    assert page.inner_text("#live-note") == "live"
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    dash.shot("study-waiting")

    threads = WorkerThreads(1)
    driver = threading.Thread(target=study.run_study, args=(record.id,),
                              kwargs={"log": lambda line: None, "poll_s": 0.05}, daemon=True)
    driver.start()
    try:
        def complete() -> int:
            return page.locator('#trials-body tr[data-state="complete"]').count()

        wait_for(lambda: complete() >= 1, timeout=90, message="the first complete trial on the page")
        assert page.evaluate("window.sameDocument") is True
        wait_for(lambda: "finished" in page.inner_text("#study-state"), timeout=90, message="the study to finish")
        driver.join(60)
    finally:
        threads.stop()
    assert page.evaluate("window.sameDocument") is True  # updated in place, never reloaded
    assert page.locator("#trials-body tr").count() == 3 and complete() == 3
    assert page.inner_text("#count-complete") == "3" and page.inner_text("#count-launched") == "3/3"
    # Polling stops once the finished report's plots are fetched again (one image at a time).
    wait_for(lambda: page.inner_text("#live-note") == "", timeout=60, message="polling to stop")
    assert page.locator("#best-trial").count() == 1
    wait_for(lambda: page.locator('#plots figure[data-plot="history"] img').count() == 1, timeout=20,
             message="the history plot")
    history = page.locator('#plots figure[data-plot="history"] img')
    assert "v=" in history.get_attribute("src")  # fetched again after the trials changed
    assert history.evaluate("img => img.complete && img.naturalWidth > 0")
    dash.shot("study-finished")
