"""Alert rules of a deployment: thresholds from its settings, `oikyo deployments alerts`, runbooks, memory gauges.

The rules' behaviour in Prometheus (pending, firing, quiet) is tested with promtool in
test_alert_rules_promtool.py.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.errors import OikyoError
from oikyo.monitor import alerts
from oikyo.store import db
from oikyo.store.models import Deployment

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def bot():
    with db.session() as s:
        s.add(Deployment(name="bot", model="m", variants=[{"label": "m", "model": "m", "weight": 100}],
                         host="127.0.0.1", port=1, replicas_min=2, replicas_max=3, state="stopped",
                         settings={"max_batch_size": 16}))
    return "bot"


def _alert(rules: dict, name: str) -> dict:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)


def test_every_alert_is_labelled_and_has_a_runbook_section():
    rules = alerts.render("bot", alerts.MonitoringSettings(max_pool_memory_gib=8))
    headings = set(re.findall(r"^### (\w+)$", (ROOT / "docs" / "monitoring.md").read_text(), re.M))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert 'deployment="bot"' in rule["expr"], rule  # each deployment's rules watch only it
            if "alert" not in rule:
                continue
            assert rule["labels"]["deployment"] == "bot"
            assert rule["labels"]["severity"] in alerts.SEVERITIES
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{rule['alert'].lower()}"
            assert rule["alert"] in headings, f"docs/monitoring.md has no section for {rule['alert']}"
            assert "[[" not in yaml.safe_dump(rule)


def test_thresholds_come_from_the_settings():
    rules = alerts.render("bot", alerts.MonitoringSettings(slo_availability=0.999, p99_latency_s=12.5,
                                                           drift_for_minutes=40), replicas_min=3)
    fast = _alert(rules, "OikyoErrorBudgetBurnFast")["expr"]
    assert "> 14.4 * 0.001" in fast and "> 6 * 0.001" in fast  # the budget of a 99.9% SLO, written plainly
    assert _alert(rules, "OikyoHighLatency")["expr"].endswith("> 12.5")
    assert _alert(rules, "OikyoReplicasBelowMinimum")["expr"].endswith("< 3")
    assert _alert(rules, "OikyoDrift")["for"] == "40m"
    assert "99.9% availability" in _alert(rules, "OikyoErrorBudgetBurnFast")["annotations"]["description"]


def test_pool_memory_rule_only_when_its_limit_is_set():
    assert "OikyoReplicaMemoryHigh" not in alerts.alert_names(alerts.render("bot"))
    rules = alerts.render("bot", alerts.MonitoringSettings(max_pool_memory_gib=6))
    assert _alert(rules, "OikyoReplicaMemoryHigh")["expr"].endswith("> 6 * 1024^3")


def test_set_thresholds_merges_with_recorded_ones_and_export_uses_them(bot, tmp_path):
    alerts.set_thresholds(bot, {"p99_latency_s": 9})
    alerts.set_thresholds(bot, {"queue_depth": 64})
    settings, replicas_min = alerts.settings_of(bot)
    assert (settings.p99_latency_s, settings.queue_depth, replicas_min) == (9, 64, 2)
    alerts.set_thresholds(bot, {"p99_latency_s": None})  # back to the default
    assert alerts.settings_of(bot)[0].p99_latency_s == alerts.MonitoringSettings().p99_latency_s
    path = tmp_path / "rules.yaml"
    alerts.export(bot, path)
    rules = yaml.safe_load(path.read_text())
    assert _alert(rules, "OikyoQueueBacklog")["expr"].endswith("> 64")
    assert _alert(rules, "OikyoReplicasBelowMinimum")["expr"].endswith("< 2")


def test_bad_settings_are_clear_errors(bot):
    with pytest.raises(OikyoError, match="slo_availability"):
        alerts.set_thresholds(bot, {"slo_availability": 1.5})
    with pytest.raises(OikyoError, match="'p99' is not a monitoring setting.*'oops': write KEY=VALUE"):
        alerts.parse_assignments(["p99=3", "oops"])
    assert alerts.parse_assignments(["p99_ttft_s=2.5", "max_pool_memory_gib=default"]) == {
        "p99_ttft_s": 2.5, "max_pool_memory_gib": None}


def test_cli_prints_sets_and_exports(bot, tmp_path):
    shown = invoke("deployments", "alerts", bot)
    assert shown.exit_code == 0, shown.output
    assert _alert(yaml.safe_load(shown.stdout), "OikyoHighLatency")["labels"] == {"deployment": bot,
                                                                                   "severity": "page"}
    path = tmp_path / "bot.rules.yaml"
    done = invoke("deployments", "alerts", bot, "--set", "invalid_json_share=0.2", "--export", str(path))
    assert done.exit_code == 0, done.output
    assert "invalid_json_share=0.2" in done.output and f"Wrote {path}" in done.output.replace("\n", "")
    assert "> 0.2 and" in _alert(yaml.safe_load(path.read_text()), "OikyoInvalidJson")["expr"]
    listed = invoke("deployments", "alerts", bot, "--settings")
    assert '"invalid_json_share": 0.2' in listed.stdout and '"replicas_min": 2' in listed.stdout


def test_cli_errors_exit_non_zero_without_a_traceback(bot):
    unknown = invoke("deployments", "alerts", "nope")
    assert unknown.exit_code == 2 and "no deployment named 'nope'" in unknown.output
    bad = invoke("deployments", "alerts", bot, "--set", "slo_availability=2")
    assert bad.exit_code == 2 and "slo_availability" in bad.output and "Traceback" not in bad.output
    assert alerts.settings_of(bot)[0].slo_availability == 0.995  # nothing recorded


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (scripts/install-prometheus.sh)")
def test_cli_check_runs_promtool(bot, tmp_path):
    done = invoke("deployments", "alerts", bot, "--export", str(tmp_path / "r.yaml"), "--check")
    assert done.exit_code == 0, done.output
    assert "SUCCESS: 25 rules found" in done.output  # 13 recording rules and 12 alerts
    broken = tmp_path / "broken.yaml"
    broken.write_text(alerts.to_yaml(alerts.render(bot), bot).replace("histogram_quantile(0.99,", "histogram_quantile(", 1))
    passed, output = alerts.check_rules(broken)
    assert not passed and "broken.yaml" in output


def test_memory_gauges_are_read_at_scrape_time():
    from oikyo.serve.gateway.metrics import RouterMetrics

    metrics = RouterMetrics("bot")
    metrics.observe_pool("m", queue_depth=0, in_flight=0, states={"ready": 1}, pids=[os.getpid(), 2 ** 22 + 7])
    text = metrics.render()[0].decode()
    rss = float(re.search(r'^oikyo_replica_memory_bytes\{deployment="bot",pool="m"\} (\S+)$', text, re.M)[1])
    assert 10 * 2 ** 20 < rss < 64 * 2 ** 30  # this test process's resident memory; the unknown pid counts 0
    ratio = float(re.search(r'^oikyo_machine_memory_available_ratio\{deployment="bot"\} (\S+)$', text, re.M)[1])
    assert 0 < ratio <= 1
