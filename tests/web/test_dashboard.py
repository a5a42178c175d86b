"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against the real server.

What a user does and sees: log in (and be sent back to the login form without a session); every page
rendering with an empty store; a bad upload showing its line-numbered problems; a good upload with its
quality histograms and rows; a run started from the form whose loss chart gains points live, then
cancelled; two runs compared (curves, metric CIs, config diff); a blind pairwise rating; a one-click
deployment. Each step saves a screenshot (see conftest.py for where).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import webseed
from browserhelpers import TOKEN
from jobhelpers import make_dataset, wait_for

pytestmark = pytest.mark.browser

EMPTY_PAGES = {"/": "Overview", "/datasets": "Datasets", "/runs": "Runs", "/compare": "Compare",
               "/rate": "Rate answers", "/models": "Models", "/deployments": "Deployments"}


def test_login_and_every_page_renders_with_an_empty_store(dash):
    page = dash.page
    dash.goto("/runs")
    assert page.url == f"{dash.url}/login?next=%2Fruns"  # no session: sent to the login form
    dash.shot("login")
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "Wrong token" in page.inner_text("#login-error")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{dash.url}/runs")  # back where the user was going

    for path, heading in EMPTY_PAGES.items():
        dash.goto(path)
        assert page.inner_text("h1") == heading
        assert page.locator(".empty").count() >= 1, f"{path} shows no empty state"
        dash.shot("empty" + (path.replace("/", "-") if path != "/" else "-overview"))
    # The run form is generated from the config schema: one input per YAML key.
    dash.goto("/runs")
    for key in ("model.name", "data.dataset", "train.lr", "lora.rank", "checkpoint.keep_best"):
        assert page.locator(f'[data-path="{key}"]').count() == 1
    wait_for(lambda: "lr: 0.0002" in page.inner_text("#yaml-preview"), timeout=10, message="the YAML preview")
    page.fill('[data-path="train.lr"]', "0.0005")
    page.check('[data-path="train.report_to"] input[value=tensorboard]')
    wait_for(lambda: "lr: 0.0005" in page.inner_text("#yaml-preview") and "tensorboard" in page.inner_text(
        "#yaml-preview").split("report_to")[1].split("\n")[0], timeout=10, message="the YAML to follow the form")
    page.fill('[data-path="train.lr"]', "7")  # out of bounds: the server's validation shows, by field
    wait_for(lambda: "train.lr" in page.inner_text("#run-problems"), timeout=10, message="the problem")
    dash.shot("run-form-problem")

    page.click("#logout")
    page.wait_for_url(re.compile(r".*/login.*"))
    dash.goto("/datasets")
    assert "/login" in page.url
    # A login link carrying the token in its fragment fills the form (the token never reaches a server log).
    dash.goto(f"/login#token={TOKEN}")
    assert page.input_value("#token") == TOKEN


def _chat_rows(n: int) -> list[str]:
    return [json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                     {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]})
            for i in range(n)]


def test_a_bad_upload_shows_its_problems_and_a_good_one_its_report(dash, tmp_path):
    page = dash.page
    dash.login("/datasets")
    lines = _chat_rows(6)
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'  # line 3: broken JSON
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "hello"}, {"role": "robot", "content": "x"}]})
    bad = tmp_path / "support.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    table = page.wait_for_selector("#upload-result table.problems")
    rows = [[cell.inner_text() for cell in row.query_selector_all("td")] for row in table.query_selector_all("tbody tr")]
    assert rows[0][0] == "3" and rows[0][2] == "invalid_json"
    assert rows[1][:3] == ["5", "messages[1].role", "unknown_role"] and "robot" in rows[1][3]
    assert "nothing was stored" in page.inner_text("#upload-result")
    dash.shot("bad-upload")

    good = tmp_path / "sums.jsonl"
    good.write_text("\n".join(_chat_rows(45)) + "\n")
    page.set_input_files("#upload-file", str(good))
    page.click("#upload-button")
    page.wait_for_selector("#uploaded-link")
    assert "45 rows" in page.inner_text("#upload-result")
    page.wait_for_selector("#dataset-table")  # the list shows the new version without a reload
    assert "sums" in page.inner_text("#dataset-table")
    dash.shot("good-upload")
    page.click("#uploaded-link")
    page.wait_for_selector("#hist-example[data-bars]")
    assert int(page.get_attribute("#hist-example", "data-bars")) >= 1
    assert page.locator("#hist-roles .chart").count() == 2  # user and assistant turns
    wait_for(lambda: page.locator("#rows-body .row-card").count() == 20, timeout=10, message="the first 20 rows")
    assert "rows 1–20 of 45" in page.inner_text("#rows-range")
    page.click("#rows-next")
    wait_for(lambda: "rows 21–40 of 45" in page.inner_text("#rows-range"), timeout=10, message="the next page")
    assert "What is 20 plus 20?" in page.inner_text("#rows-body")
    dash.shot("dataset")
    page.select_option("#report-model", "smollm2-135m-instruct")  # lengths in the bundled model's tokens
    wait_for(lambda: page.inner_text("#report-unit").startswith("(tokens"), timeout=60, message="the token counts")

    # Split it from the page: a new version whose lineage names its parent.
    page.click("#split-form button[type=submit]")
    page.wait_for_selector("text=Made by")
    wait_for(lambda: "split" in page.inner_text(".facts"), timeout=10, message="the split version's page")
    assert page.locator(".stat .label", has_text="validation").count() == 1
    page.wait_for_selector("#hist-example[data-bars]")
    dash.shot("dataset-split")


def test_a_run_started_from_the_form_charts_its_loss_live_and_can_be_cancelled(dash, worker, tiny_model_dir, tmp_path):
    page = dash.page
    make_dataset(tmp_path, name="sums", n=40)
    dash.login("/runs")
    settings = {"model.name": str(tiny_model_dir), "data.dataset": "sums", "data.max_length": "64",
                "data.max_eval_rows": "4", "train.batch_size": "2", "train.max_steps": "5000",
                "train.eval_every": "25", "train.num_threads": "1", "checkpoint.save_every": "100",
                "train.warmup_steps": "0"}
    for key, value in settings.items():
        page.fill(f'[data-path="{key}"]', value)
    page.fill("#run-name", "tiny-live")
    wait_for(lambda: "max_steps: 5000" in page.inner_text("#yaml-preview"), timeout=15, message="the YAML preview")
    assert "dataset: sums" in page.inner_text("#yaml-preview")
    dash.shot("new-run-form")
    page.click("#start-run")
    page.wait_for_url(re.compile(r".*/runs/run-[0-9a-f]+$"))
    run_id = page.url.rsplit("/", 1)[1]

    def points() -> int:
        return int(page.get_attribute("#chart-loss", "data-points") or 0)

    first = wait_for(lambda: points() >= 2 and points(), timeout=120, message="the first loss points")
    later = wait_for(lambda: points() >= first + 5 and points(), timeout=60, message="more loss points, live")
    assert later > first
    assert page.locator("#chart-loss path[data-series=loss]").count() == 1
    wait_for(lambda: page.inner_text("#stat-step") not in ("0", "—"), timeout=10, message="the step counter")
    dash.shot("run-live")

    page.click("#cancel-run")
    wait_for(lambda: "cancelled" in page.inner_text("#run-state"), timeout=90, message="the run to stop")
    from oikyo.jobs import queue

    assert queue.get(run_id).state == "cancelled"
    page.wait_for_load_state("load")
    time.sleep(2)  # the page reloads itself once the run has finished, to list its checkpoint
    dash.goto(f"/runs/{run_id}")
    assert page.locator("#resume-run").is_enabled()
    assert "cancel" in page.inner_text("#log-tail").lower()
    dash.shot("run-cancelled")


def test_two_runs_compared_and_their_models_on_the_leaderboard(dash, tmp_path):
    page = dash.page
    dataset = make_dataset(tmp_path, name="sums", n=40)
    (run_a, mv_a), (run_b, _) = webseed.two_evaluated_runs(dataset, "smollm2-135m-instruct", tmp_path / "runs")
    dash.login("/compare")
    page.select_option("#pick-a", run_a.id)
    page.select_option("#pick-b", run_b.id)
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#metrics-table")
    wait_for(lambda: int(page.get_attribute("#chart-loss", "data-points") or 0) == 120, timeout=10,
             message="both loss curves (60 points each)")
    assert page.locator("#chart-loss path").count() == 2
    row = page.locator("#metrics-table tbody tr", has_text="exact_match")
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells[1:4] == ["0.8333", "0.3333", "0.5"]  # A 10/12, B 4/12, delta
    low, high = (float(x) for x in re.findall(r"-?[\d.]+", cells[4]))
    assert 0 < low < 0.5 < high  # a significant difference: the interval excludes 0
    assert cells[5] == f"{mv_a.id} is better"
    diff = page.inner_text("#config-diff")
    assert "train.lr" in diff and "0.0002" in diff and "0.001" in diff
    assert page.locator("#examples-body .answer").count() >= 2
    dash.shot("compare")

    dash.goto("/models")
    lineage = page.inner_text("#model-versions")
    assert mv_a.id in lineage and run_a.id in lineage and dataset.id in lineage
    board = page.locator("#leaderboard table tbody tr")
    assert board.count() == 2 and mv_a.id in board.nth(0).inner_text()  # ranked by exact_match
    dash.shot("models")

    dash.goto("/")
    assert page.locator(".stat", has_text="succeeded").inner_text().startswith("2")
    assert run_a.name in page.inner_text("main") and dataset.id in page.inner_text("main")
    dash.shot("overview")


def test_a_blind_pairwise_rating_stores_choices_and_shows_the_win_rate(dash, tmp_path):
    from oikyo.evaluate import human

    page = dash.page
    dataset = make_dataset(tmp_path, name="sums", n=40)
    (_, mv_a), (_, mv_b) = webseed.two_evaluated_runs(dataset, "smollm2-135m-instruct", tmp_path / "runs")
    dash.login("/rate")
    page.select_option("#rate-form select[name=a]", mv_a.id)
    page.select_option("#rate-form select[name=b]", mv_b.id)
    page.select_option("#rate-form select[name=dataset]", dataset.id)
    page.fill("#rate-form input[name=n]", "4")
    page.click("#rate-form button[type=submit]")
    page.wait_for_selector("#rate-pair:not([hidden])")
    pair_text = page.inner_text("#rate-pair")
    assert "1 of 4" in pair_text and mv_a.id not in pair_text and mv_b.id not in pair_text  # blind
    dash.shot("rate-pair")
    for number, choice in enumerate(["left", "right", "tie", "left"], start=1):
        shown = f"{number} of 4"
        wait_for(lambda shown=shown: shown in page.inner_text("#pair-number"), timeout=10, message=f"pair {number}")
        page.click(f"#rate-pair button[data-choice={choice}]")
    page.wait_for_selector("#rate-summary:not([hidden]) #win-rate")
    result = human.summary(mv_a.id, mv_b.id)
    assert result["n"] == 4 and result["ties"] == 1  # stored
    shown = page.inner_text("#summary-body")
    assert f"{result['win_rate_a'] * 100:.3g}%" in shown and "95% CI" in shown and "ties 1" in shown
    dash.shot("rate-summary")


def test_one_click_deploy_serves_requests_charted_live_then_stops(dash, tiny_model_dir, monkeypatch):
    """A real deployment (router and replica processes) of a tiny model version, an API key made on the
    page, one chat request, its point on the requests chart, then stop and revoke."""
    import httpx

    from oikyo.serve.gateway import deployments
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with db.session() as s:
        s.add(ModelVersion(id="mv-0000e2e0", run_id=None, base_model=str(tiny_model_dir), kind="full",
                           path=str(tiny_model_dir), lineage={}, created_at=utcnow()))
    page = dash.page
    page.on("dialog", lambda dialog: dialog.accept())  # the revoke confirmation
    dash.login("/deployments")
    page.fill("#key-form input[name=name]", "e2e")
    page.click("#key-form button[type=submit]")
    secret = page.wait_for_selector("#new-secret").inner_text()
    page.click("#key-secret button")
    page.wait_for_selector("#keys-table")

    page.select_option("#deploy-model", "mv-0000e2e0")
    page.fill("#deploy-form input[name=name]", "tiny")
    page.fill("#deploy-form input[name=port]", "0")
    try:
        page.click("#deploy-button")
        page.wait_for_selector("#deploy-result .ok-box", timeout=240_000)
        page.wait_for_selector("#dep-tiny .state-running")
        info = deployments.show("tiny")
        answer = httpx.post(f"{info['url']}/chat/completions", timeout=120, headers={"Authorization": f"Bearer {secret}"},
                            json={"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.text
        wait_for(lambda: page.get_attribute("#dep-tiny", "data-requests") == "1", timeout=30,
                 message="the request on the stats")
        requests_chart = page.locator('#dep-tiny [data-chart="requests"]')
        assert int(requests_chart.get_attribute("data-points")) == 60  # one point per minute of the last hour
        assert "1 requests" in page.inner_text("#dep-tiny [data-stats-line]")
        dash.shot("deployed")

        page.click("#dep-tiny .stop-button")
        page.wait_for_selector("#dep-tiny .state-stopped", timeout=120_000)
    finally:  # never leave processes behind, whatever failed
        if any(d["name"] == "tiny" and d["status"] in ("starting", "running") for d in deployments.list_deployments()):
            deployments.stop("tiny", timeout_s=30)
    page.click("#keys-table button.revoke")
    wait_for(lambda: "revoked" in page.inner_text("#keys-table"), timeout=10, message="the key to be revoked")
    dash.shot("stopped")
