"""A deployment's drift checks and quality signals over REST (what the dashboard's Drift panel fetches):
the history newest first, filtered by detector or variant, the newest check per (variant, detector),
quality shares of checked answers; unknown deployments answer 404 and bad parameters 422."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitor"))

import drift_history  # noqa: E402

API = "/api/v1"


def test_drift_history_and_latest_per_detector(api):
    drift_history.deployment("bot")
    drift_history.history("bot")
    drift_history.history("other")  # another deployment's checks stay out

    view = api.get(f"{API}/deployments/bot/drift").json()
    assert view["deployment"] == "bot"
    checks = view["checks"]
    assert len(checks) == 6 and {c["deployment"] for c in checks} == {"bot"}
    assert [c["created_at"] for c in checks] == sorted((c["created_at"] for c in checks), reverse=True)
    oov = [c for c in checks if c["detector"] == "input_oov"]
    assert [round(c["score"], 6) for c in oov] == [3.2, 0.4, 0.2]  # statistic / threshold, newest first
    assert [c["alarm"] for c in oov] == [True, False, False]
    assert oov[0]["details"]["what"] == drift_history.MARKUP_WHAT
    assert oov[0]["details"]["examples"][0]["input"] == drift_history.MARKUP_INPUT

    latest = {(c["variant"], c["detector"]): c for c in view["latest"]}
    assert set(latest) == {(drift_history.VARIANT, "input_oov"), (drift_history.VARIANT, "input_embedding")}
    assert latest[(drift_history.VARIANT, "input_oov")]["score"] == pytest.approx(3.2)
    assert latest[(drift_history.VARIANT, "input_embedding")]["score"] == pytest.approx(0.5)

    one = api.get(f"{API}/deployments/bot/drift", params={"detector": "input_embedding", "limit": 2}).json()["checks"]
    assert [c["detector"] for c in one] == ["input_embedding"] * 2
    assert [round(c["score"], 6) for c in one] == [0.5, 0.3]
    assert api.get(f"{API}/deployments/bot/drift", params={"variant": "mv-none"}).json()["checks"] == []


def test_drift_without_checks_is_empty_and_unknown_deployments_are_404(api):
    drift_history.deployment("bot")
    assert api.get(f"{API}/deployments/bot/drift").json() == {"deployment": "bot", "latest": [], "checks": []}
    drift_history.history("ghost")  # checks of a deployment that has no record: still not a deployment
    for path in ("drift", "quality"):
        missing = api.get(f"{API}/deployments/ghost/{path}")
        assert missing.status_code == 404, missing.text
        assert "ghost" in missing.text
        assert api.get(f"{API}/deployments/..bot/{path}").status_code == 400
    assert api.get(f"{API}/deployments/bot/drift", params={"limit": 0}).status_code == 422
    assert api.get(f"{API}/deployments/bot/quality", params={"window_s": -1}).status_code == 422


def test_quality_shares_of_checked_answers(api):
    drift_history.deployment("bot")
    assert api.get(f"{API}/deployments/bot/quality").json() == {"deployment": "bot", "window_s": 3600.0, "variants": {}}
    drift_history.answers("bot")
    view = api.get(f"{API}/deployments/bot/quality", params={"window_s": 600}).json()
    shares = view["variants"][drift_history.VARIANT]
    assert shares["checked"] == 4
    assert shares["refusal_share"] == pytest.approx(0.25) and shares["degenerate_share"] == 0
    assert shares["invalid_json_share"] == 0 and shares["schema_mismatch_share"] == 0
    assert shares["rated"] == 1 and shares["negative_feedback_share"] == 1.0
