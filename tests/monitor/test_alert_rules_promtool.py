"""`promtool test rules` for every alert of a deployment's rules: firing, pending and quiet cases.

Each case renders the rules as `oikyo deployments alerts` writes them (thresholds from
MonitoringSettings), writes a promtool test file with input series generated here, and runs Debian's
promtool on it (scripts/install-prometheus.sh). Pending and firing are read from the ALERTS series
Prometheus itself writes; quiet means neither. Skips, saying why, without promtool.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from oikyo.monitor import alerts

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (scripts/install-prometheus.sh)")

D = "svc"
REQ = f'deployment="{D}",model="m",variant="m"'
GIB = 1024 ** 3


def histogram(name: str, slow: bool, edges: tuple[str, str]) -> list[tuple[str, str]]:
    """Buckets le=low, le=high and +Inf of ``name``, 10 requests a minute, all below ``low`` (fast) or
    between ``low`` and ``high`` (slow)."""
    low, high = edges
    return [(f'{name}_bucket{{{REQ},le="{low}"}}', "0+0x40" if slow else "0+10x40"),
            (f'{name}_bucket{{{REQ},le="{high}"}}', "0+10x40"),
            (f'{name}_bucket{{{REQ},le="+Inf"}}', "0+10x40")]


def errors(per_100: float, minutes: int = 80, after: str = "") -> list[tuple[str, str]]:
    """100 requests a minute, ``per_100`` of them failing with a 500 (then ``after``, if given)."""
    return [(f'oikyo_requests_total{{{REQ},status="200"}}', f"0+{100 - per_100}x{minutes}"),
            (f'oikyo_requests_total{{{REQ},status="500"}}', f"0+{per_100}x{minutes}{after}"),
            (f'oikyo_request_errors_total{{{REQ},kind="server"}}', f"0+{per_100}x{minutes}{after}")]


def gauge(series: str, value: float) -> list[tuple[str, str]]:
    return [(series, f"{value}+0x40")]


def quality(checked: float, **flags: float) -> list[tuple[str, str]]:
    rows = [(f"oikyo_quality_checked_total{{{REQ}}}", f"0+{checked}x40")]
    return rows + [(f'oikyo_quality_flags_total{{{REQ},signal="{signal}"}}', f"0+{per_min}x40")
                   for signal, per_min in flags.items()]


def feedback(total: float, negative: float) -> list[tuple[str, str]]:
    labels = f'deployment="{D}",variant="m"'
    return [(f"oikyo_feedback_total{{{labels}}}", f"0+{total}x40"),
            (f"oikyo_feedback_negative_total{{{labels}}}", f"0+{negative}x40")]


@dataclass
class Case:
    alert: str
    firing: list  # input series under which the alert goes pending, then fires
    quiet: list  # input series under which it never does
    pending_at: str  # condition true, `for` not yet elapsed
    firing_at: str
    labels: dict = field(default_factory=dict)  # the alert's labels besides alertname, deployment, severity
    settings: dict = field(default_factory=dict)
    replicas_min: int = 1


SEVERITY = {"OikyoErrorBudgetBurnFast": "page", "OikyoErrorBudgetBurnSlow": "ticket", "OikyoHighLatency": "page",
            "OikyoSlowFirstToken": "page", "OikyoQueueBacklog": "ticket", "OikyoReplicasBelowMinimum": "page",
            "OikyoDeploymentDown": "page", "OikyoMemoryPressure": "page", "OikyoReplicaMemoryHigh": "ticket",
            "OikyoDrift": "ticket", "OikyoNegativeFeedback": "ticket", "OikyoInvalidJson": "ticket",
            "OikyoDegenerateAnswers": "ticket"}
VARIANT = {"variant": "m"}

CASES = [
    # p99 of ~59s against 30s (default p99_latency_s); quiet: ~1s.
    Case("OikyoHighLatency", histogram("oikyo_request_latency_seconds", True, ("1", "60")),
         histogram("oikyo_request_latency_seconds", False, ("1", "60")), "5m", "15m"),
    Case("OikyoHighLatency", histogram("oikyo_request_latency_seconds", True, ("1", "60")),
         histogram("oikyo_request_latency_seconds", True, ("1", "60")), "5m", "15m",
         settings={"p99_latency_s": 5}),  # firing at 5s; the quiet run raises the threshold to 90s below
    Case("OikyoSlowFirstToken", histogram("oikyo_time_to_first_token_seconds", True, ("0.5", "10")),
         histogram("oikyo_time_to_first_token_seconds", False, ("0.5", "10")), "5m", "15m"),
    # 10% errors against a 0.5% budget: 20x in 1h and 5m. Quiet: 1% (2x, below both page pairs).
    Case("OikyoErrorBudgetBurnFast", errors(10), errors(1), "2m", "6m"),
    # 2% errors: 4x (above 3x over 1d and 2h, below 6x); quiet: 0.4% (inside the budget).
    Case("OikyoErrorBudgetBurnSlow", errors(2), errors(0.4), "5m", "20m"),
    Case("OikyoQueueBacklog", gauge(f'oikyo_queue_depth{{deployment="{D}",pool="m"}}', 50),
         gauge(f'oikyo_queue_depth{{deployment="{D}",pool="m"}}', 10), "5m", "12m", labels={"pool": "m"}),
    Case("OikyoReplicasBelowMinimum",
         gauge(f'oikyo_replicas{{deployment="{D}",pool="m",state="ready"}}', 1)
         + gauge(f'oikyo_replicas{{deployment="{D}",pool="m",state="starting"}}', 1),
         gauge(f'oikyo_replicas{{deployment="{D}",pool="m",state="ready"}}', 2), "2m", "7m",
         labels={"pool": "m"}, replicas_min=2),
    # The scrape fails (up == 0): one alert, with the target's labels.
    Case("OikyoDeploymentDown", gauge(f'up{{deployment="{D}",job="oikyo",instance="127.0.0.1:8000"}}', 0),
         gauge(f'up{{deployment="{D}",job="oikyo",instance="127.0.0.1:8000"}}', 1)
         + gauge(f'oikyo_replicas{{deployment="{D}",pool="m",state="ready"}}', 1), "2m", "7m",
         labels={"job": "oikyo", "instance": "127.0.0.1:8000"}),
    # Nothing of this deployment is scraped at all (another one is): absent() fires.
    Case("OikyoDeploymentDown", gauge('oikyo_replicas{deployment="other",pool="m",state="ready"}', 1),
         gauge(f'oikyo_replicas{{deployment="{D}",pool="m",state="ready"}}', 1), "2m", "7m"),
    Case("OikyoMemoryPressure", gauge(f'oikyo_machine_memory_available_ratio{{deployment="{D}"}}', 0.05),
         gauge(f'oikyo_machine_memory_available_ratio{{deployment="{D}"}}', 0.5), "2m", "7m"),
    Case("OikyoReplicaMemoryHigh", gauge(f'oikyo_replica_memory_bytes{{deployment="{D}",pool="m"}}', 5 * GIB),
         gauge(f'oikyo_replica_memory_bytes{{deployment="{D}",pool="m"}}', 2 * GIB), "5m", "12m",
         labels={"pool": "m"}, settings={"max_pool_memory_gib": 4}),
    Case("OikyoDrift", gauge(f'oikyo_drift_score{{deployment="{D}",variant="m",detector="mmd"}}', 1.5),
         gauge(f'oikyo_drift_score{{deployment="{D}",variant="m",detector="mmd"}}', 0.8), "5m", "20m",
         labels={**VARIANT, "detector": "mmd"}),
    Case("OikyoDrift", gauge(f'oikyo_drift_score{{deployment="{D}",variant="m",detector="mmd"}}', 1.5),
         gauge(f'oikyo_drift_score{{deployment="{D}",variant="m",detector="mmd"}}', 0.8), "3m", "7m",
         labels={**VARIANT, "detector": "mmd"}, settings={"drift_for_minutes": 5}),
    # Half the ratings negative; quiet: 10%.
    Case("OikyoNegativeFeedback", feedback(10, 5), feedback(10, 1), "5m", "20m", labels=VARIANT),
    # Every rating negative, but fewer than min_feedback (20) in the hour: quiet.
    Case("OikyoNegativeFeedback", feedback(10, 5), feedback(0.1, 0.1), "5m", "20m", labels=VARIANT),
    Case("OikyoInvalidJson", quality(20, invalid_json=4), quality(20, invalid_json=0.5, refusal=10), "5m", "20m",
         labels={**VARIANT, "signal": "invalid_json"}),
    # All answers invalid, but fewer than min_checked (50) checked in the hour: quiet.
    Case("OikyoInvalidJson", quality(20, invalid_json=4), quality(0.5, invalid_json=0.5), "5m", "20m",
         labels={**VARIANT, "signal": "invalid_json"}),
    Case("OikyoDegenerateAnswers", quality(20, degenerate=2, empty=1), quality(20, degenerate=0.5, invalid_json=10),
         "5m", "20m", labels=VARIANT),
]


def run_promtool(tmp_path, rules: dict, tests: list[dict]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yaml").write_text(alerts.to_yaml(rules, D))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                        "tests": tests}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def alerts_series(case: Case, state: str) -> dict:
    labels = {"alertname": case.alert, "alertstate": state, "deployment": D, "severity": SEVERITY[case.alert],
              **case.labels}
    return {"labels": "ALERTS{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}", "value": 1}


def expect(case: Case, at: str, state: str | None) -> dict:
    """A promql test: at ``at`` the case's alert is ``state`` (pending | firing) or absent (None)."""
    samples = [alerts_series(case, state)] if state else []
    return {"expr": f'ALERTS{{alertname="{case.alert}"}}', "eval_time": at, "exp_samples": samples}


def series(rows: list[tuple[str, str]]) -> list[dict]:
    return [{"series": name, "values": values} for name, values in rows]


def case_id(case: Case) -> str:
    return case.alert + ("-" + "-".join(f"{k}={v}" for k, v in case.settings.items()) if case.settings else "")


def test_every_alert_has_a_case():
    rendered = alerts.render(D, alerts.MonitoringSettings(max_pool_memory_gib=4))
    assert set(alerts.alert_names(rendered)) == {c.alert for c in CASES} == set(SEVERITY)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_rule_goes_pending_then_fires_and_stays_quiet_on_healthy_series(tmp_path, case):
    rules = alerts.render(D, alerts.MonitoringSettings(**case.settings), case.replicas_min)
    quiet_settings = dict(case.settings)
    if case.alert == "OikyoHighLatency" and case.settings:
        quiet_settings["p99_latency_s"] = 90  # the same slow series, quiet under a higher threshold
        quiet_rules = alerts.render(D, alerts.MonitoringSettings(**quiet_settings), case.replicas_min)
    else:
        quiet_rules = rules
    done = run_promtool(tmp_path, rules, [{
        "interval": "1m", "input_series": series(case.firing),
        "promql_expr_test": [expect(case, case.pending_at, "pending"),
                             expect(case, case.firing_at, "firing")],
    }])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    quiet_dir = tmp_path / "quiet"
    quiet_dir.mkdir()
    done = run_promtool(quiet_dir, quiet_rules, [{
        "interval": "1m", "input_series": series(case.quiet),
        "alert_rule_test": [{"eval_time": case.firing_at, "alertname": case.alert, "exp_alerts": []}],
        "promql_expr_test": [expect(case, t, None) for t in (case.pending_at, case.firing_at, "30m")],
    }])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_fast_burn_stops_soon_after_the_errors_stop(tmp_path):
    """The short windows end a page: 10% errors for 30 minutes, then none. At 62m the long window (6h)
    still holds 4.9% errors, above 6x the budget, but its short window (30m) is clean: no alert."""
    case = Case("OikyoErrorBudgetBurnFast", [], [], "", "")
    rows = [(f'oikyo_requests_total{{{REQ},status="200"}}', "0+90x30 2700+100x50"),
            (f'oikyo_requests_total{{{REQ},status="500"}}', "0+10x30 300+0x50"),
            (f'oikyo_request_errors_total{{{REQ},kind="server"}}', "0+10x30 300+0x50")]
    ratio = f'deployment:oikyo_request_errors:ratio_rate6h{{deployment="{D}"}}'
    done = run_promtool(tmp_path, alerts.render(D), [{
        "interval": "1m", "input_series": series(rows),
        "promql_expr_test": [expect(case, "20m", "firing"), expect(case, "62m", None),
                             {"expr": f"{ratio} > 6 * 0.005", "eval_time": "62m",
                              "exp_samples": [{"labels": ratio, "value": 300 / 6100}]}],  # 300 of 6100 requests
    }])
    assert done.returncode == 0, done.stdout + done.stderr


def test_annotations_render_with_the_thresholds(tmp_path):
    """A firing alert as Alertmanager receives it: labels and rendered annotations, runbook included."""
    rules = alerts.render(D, alerts.MonitoringSettings(invalid_json_share=0.1))
    done = run_promtool(tmp_path, rules, [{
        "interval": "1m", "input_series": series(quality(20, invalid_json=4)),
        "alert_rule_test": [{"eval_time": "20m", "alertname": "OikyoInvalidJson", "exp_alerts": [{
            "exp_labels": {"deployment": D, "variant": "m", "signal": "invalid_json", "severity": "ticket"},
            "exp_annotations": {
                "summary": f"{D}: 20% of the answers of m are not valid JSON",
                "description": "Over the last hour more than 10% of at least 50 checked answers were invalid JSON.",
                "runbook_url": "docs/monitoring.md#oikyoinvalidjson"}}]}],
    }])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_expectation_fails(tmp_path):
    """The harness can fail: expecting the latency alert quiet while p99 is ~59s makes promtool exit 1."""
    case = CASES[0]
    done = run_promtool(tmp_path, alerts.render(D), [{
        "interval": "1m", "input_series": series(case.firing),
        "promql_expr_test": [expect(case, case.firing_at, None)]}])
    assert done.returncode == 1
    assert "FAILED" in done.stdout + done.stderr and "OikyoHighLatency" in done.stdout + done.stderr
