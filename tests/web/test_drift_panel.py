"""The deployments page's Drift panel and Quality line: rendered without a browser (the empty state with
the command to run; the panel's place once checks exist), then in headless chromium over seeded drift
checks (the latest score per detector with a red badge above 1, what moved and the alarm's example
inputs shown as text, one score chart per detector with the threshold line, the quality shares)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from browserhelpers import TOKEN
from fastapi.testclient import TestClient
from jobhelpers import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitor"))

import drift_history  # noqa: E402

EMPTY = "No drift checks yet: run <code>oikyo deployments drift {name}</code> (add <code>--every 300</code> to keep checking)."


def _card(html: str, name: str) -> str:
    start = html.index(f'id="dep-{name}"')
    end = html.find('<section class="card', start)
    return html[start:end]


def test_the_page_renders_the_panel_with_its_empty_state_until_checks_exist():
    from oikyo.api.app import create_app

    drift_history.deployment("bot")
    drift_history.deployment("quiet")
    drift_history.history("bot")
    with TestClient(create_app(TOKEN)) as client:
        assert client.post("/api/v1/login", json={"token": TOKEN}).status_code == 200
        html = client.get("/deployments").text
        assert client.get("/static/drift.js").status_code == 200
    assert "/static/drift.js?v=" in html
    quiet, bot = _card(html, "quiet"), _card(html, "bot")
    assert "data-drift" in quiet and EMPTY.format(name="quiet") in quiet
    assert "<div data-drift-empty>" in quiet  # shown
    assert "<div data-drift-empty hidden>" in bot  # checks exist: the page fetches and draws them
    assert "data-drift-charts" in bot and "data-quality" in bot


@pytest.mark.browser
def test_drift_panel_shows_alarm_badges_examples_as_text_charts_and_quality(dash):
    drift_history.deployment("bot")
    drift_history.deployment("quiet")
    drift_history.history("bot")
    drift_history.answers("bot")
    page = dash.page
    dash.login("/deployments")
    page.wait_for_selector("#dep-bot [data-drift-latest] .badge.alarm")

    rows = page.locator("#dep-bot [data-drift-latest] tbody tr")
    assert rows.count() == 2  # the newest check per (variant, detector)
    oov = page.locator('#dep-bot [data-drift-latest] tr[data-detector="input_oov"]')
    assert oov.locator(".badge.alarm").inner_text() == "3.20"
    assert drift_history.MARKUP_WHAT in oov.inner_text()  # shown as text, not markup
    embedding = page.locator('#dep-bot [data-drift-latest] tr[data-detector="input_embedding"]')
    assert embedding.locator(".badge.calm").inner_text() == "0.50" and embedding.locator(".badge.alarm").count() == 0

    alarm = page.locator("#dep-bot [data-drift-alarm]")
    assert alarm.is_visible() and "input_oov" in alarm.inner_text()
    assert drift_history.MARKUP_INPUT in alarm.inner_text()
    assert page.locator("#dep-bot [data-drift] b, #dep-bot [data-drift] script").count() == 0
    assert page.evaluate("window.pwned") is None  # the example's script never ran

    for detector in ("input_oov", "input_embedding"):
        chart = page.locator(f'#dep-bot [data-chart="drift-{detector}"]')
        wait_for(lambda: chart.get_attribute("data-points") == "3", timeout=10, message=f"{detector}'s 3 checks")
        assert chart.locator(f'svg path[data-series="{drift_history.VARIANT}"]').count() == 1
        assert chart.locator('svg line.hline[data-y="1"]').count() == 1  # the threshold
    assert "minutes ago" in page.inner_text('#dep-bot [data-chart="drift-input_oov"] .chart-title')

    quality = page.locator("#dep-bot [data-quality]")
    text = quality.inner_text()
    assert "4 answers checked" in text and "refusal 25%" in text and "degenerate 0%" in text
    assert "invalid JSON 0%" in text and "schema mismatch 0%" in text and "negative feedback 100% of 1 rated" in text

    assert page.locator("#dep-quiet [data-drift-empty]").is_visible()
    assert "oikyo deployments drift quiet" in page.inner_text("#dep-quiet [data-drift-empty]")
    assert not page.locator("#dep-quiet [data-quality]").is_visible()  # no checked answers: no line
    page.locator("#dep-bot [data-drift]").scroll_into_view_if_needed()
    dash.shot("drift-panel")
