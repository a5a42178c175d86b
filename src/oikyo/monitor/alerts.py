"""Prometheus alerting and recording rules for a deployment, with thresholds from its settings.

The rules are a data file, ``monitor/rules/oikyo.rules.yaml``: one recording group (p99 latency and
time to first token from the router's histograms, the error ratio over the SLO burn-rate windows,
quality-flag and negative-feedback shares per variant) and one alerting group (error-budget burn
fast/slow, p99 latency, p99 time to first token, queue backlog, replicas below the minimum, the
deployment down or not scraped, memory pressure, drift, negative feedback, invalid JSON, degenerate
answers). Placeholders in it (``[[name]]``) are filled from the deployment's name, its minimum replica
count and its monitoring settings (``settings["monitoring"]`` of its record, defaults below)::

    from oikyo.monitor import alerts
    alerts.set_thresholds("support", {"p99_latency_s": 10, "slo_availability": 0.999})
    text = alerts.export("support")                        # the rules file, YAML
    alerts.check_rules(path)                               # `promtool check rules`, if promtool is here

CLI: ``oikyo deployments alerts NAME [--set KEY=VALUE ...] [--export rules.yaml] [--check]``. What
each rule means and what to do when it fires: docs/monitoring.md (each alert's ``runbook_url``).
Every alert is labelled ``deployment`` and ``severity`` (page | ticket).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oikyo.errors import OikyoError

RULES_TEMPLATE = "oikyo.rules.yaml"
RUNBOOK = "docs/monitoring.md"
PLACEHOLDER = re.compile(r"\[\[(\w+)\]\]")
SEVERITIES = ("page", "ticket")


class MonitoringSettings(BaseModel):
    """Alert thresholds of one deployment, kept in its record's ``settings["monitoring"]``."""

    model_config = ConfigDict(extra="forbid")

    slo_availability: float = Field(0.995, gt=0.5, lt=1.0, description="Availability SLO: the share of requests "
                                    "that must not fail with a 5xx over 30 days (its complement is the error "
                                    "budget the burn-rate alerts watch).")
    p99_latency_s: float = Field(30.0, gt=0, description="OikyoHighLatency: p99 request latency (seconds, 5-minute "
                                 "window) above this for 10 minutes.")
    p99_ttft_s: float = Field(5.0, gt=0, description="OikyoSlowFirstToken: p99 time to first token (seconds) above "
                              "this for 10 minutes.")
    queue_depth: float = Field(32, ge=0, description="OikyoQueueBacklog: requests waiting for a batch slot in one "
                               "pool above this for 10 minutes.")
    min_memory_available_ratio: float = Field(0.10, gt=0, lt=1, description="OikyoMemoryPressure: the machine's "
                                              "available memory below this share of its total for 5 minutes.")
    max_pool_memory_gib: float | None = Field(None, gt=0, description="OikyoReplicaMemoryHigh: the resident memory "
                                              "of one pool's replicas above this many GiB for 10 minutes (unset: "
                                              "no such rule).")
    drift_score: float = Field(1.0, gt=0, description="OikyoDrift: a drift score (statistic / calibrated "
                               "threshold) above this for drift_for_minutes; 1 is the detector's own threshold.")
    drift_for_minutes: int = Field(15, ge=1, description="OikyoDrift: how long the score must stay above "
                                   "drift_score.")
    negative_feedback_share: float = Field(0.30, gt=0, lt=1, description="OikyoNegativeFeedback: the share of "
                                           "negative ratings of a variant over 1 hour above this for 15 minutes.")
    min_feedback: int = Field(20, ge=1, description="OikyoNegativeFeedback waits for at least this many ratings "
                              "in the hour.")
    invalid_json_share: float = Field(0.05, gt=0, lt=1, description="OikyoInvalidJson: the share of checked "
                                      "answers of a variant that are invalid JSON (1 hour) above this for 15 "
                                      "minutes.")
    degenerate_share: float = Field(0.05, gt=0, lt=1, description="OikyoDegenerateAnswers: the share of "
                                    "degenerate or empty answers of a variant (1 hour) above this for 15 minutes.")
    min_checked: int = Field(50, ge=1, description="OikyoInvalidJson and OikyoDegenerateAnswers wait for at least "
                             "this many checked answers in the hour.")


def settings_of(name: str) -> tuple[MonitoringSettings, int]:
    """Deployment ``name``'s monitoring settings (defaults filled in) and minimum replicas per pool."""
    from oikyo.serve.gateway import deployments

    record = deployments.get(name)
    return _validated((record.settings or {}).get("monitoring") or {}, name), record.replicas_min


def set_thresholds(name: str, values: dict) -> MonitoringSettings:
    """Record monitoring settings of deployment ``name`` (merged with those recorded; a value of None
    goes back to the default). Only exported rules read them, so a running deployment keeps running."""
    from oikyo.serve.gateway import deployments

    recorded = (deployments.get(name).settings or {}).get("monitoring") or {}
    merged = {k: v for k, v in {**recorded, **values}.items() if v is not None}
    settings = _validated(merged, name)
    deployments.update_setting(name, "monitoring", settings.model_dump(exclude_defaults=True))
    return settings


def parse_assignments(items: list[str]) -> dict:
    """``["p99_latency_s=10", "max_pool_memory_gib=none"]`` -> a dict (values read as YAML scalars);
    unknown keys and bad values are one OikyoError listing every problem."""
    values, problems = {}, []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{item!r}: write KEY=VALUE")
            continue
        if key not in MonitoringSettings.model_fields:
            problems.append(f"{key!r} is not a monitoring setting")
            continue
        value = yaml.safe_load(raw) if raw.strip() else None
        values[key] = None if isinstance(value, str) and value.lower() in ("none", "null", "default") else value
    if problems:
        raise OikyoError("bad --set: " + "; ".join(problems) + f". Settings: {', '.join(MonitoringSettings.model_fields)}")
    return values


def _validated(values: dict, name: str) -> MonitoringSettings:
    try:
        return MonitoringSettings(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        raise OikyoError(f"monitoring settings of deployment {name!r}: {problems}") from None


# ----------------------------------------------------------------------------- rules


def _number(value: float) -> str:
    # 1 - 0.995 is 0.0050000000000000044 in binary; rules read better with 0.005.
    return f"{value:.10g}"


def substitutions(name: str, settings: MonitoringSettings, replicas_min: int) -> dict[str, str]:
    values = {"deployment": name, "replicas_min": str(replicas_min),
              "error_budget": _number(1 - settings.slo_availability), "drift_for": f"{settings.drift_for_minutes}m"}
    for key, value in settings.model_dump().items():
        if key not in values and value is not None:
            values[key] = _number(value)
    # Shares written as percentages in the alerts' descriptions.
    for key, share in (("slo_availability_pct", settings.slo_availability),
                       ("min_memory_available_pct", settings.min_memory_available_ratio),
                       ("negative_feedback_share_pct", settings.negative_feedback_share),
                       ("invalid_json_share_pct", settings.invalid_json_share),
                       ("degenerate_share_pct", settings.degenerate_share)):
        values[key] = _number(100 * share)
    return values


def render(name: str, settings: MonitoringSettings | None = None, replicas_min: int = 1) -> dict:
    """The rules of deployment ``name`` as a dict (Prometheus' rule-file layout), without the store."""
    settings = settings or MonitoringSettings()
    values = substitutions(name, settings, replicas_min)
    template = resources.files("oikyo.monitor").joinpath("rules", RULES_TEMPLATE).read_text()
    rules = yaml.safe_load(PLACEHOLDER.sub(lambda m: _fill(m, values), template))
    for group in rules["groups"]:
        kept = []
        for rule in group["rules"]:
            required = rule.pop("requires", None)
            if required and getattr(settings, required) is None:
                continue
            if "alert" in rule:
                rule["labels"] = {"deployment": name, **rule.get("labels", {})}
                rule["annotations"]["runbook_url"] = f"{RUNBOOK}#{rule['alert'].lower()}"
            kept.append(rule)
        group["rules"] = kept
    return rules


def _fill(match: re.Match, values: dict[str, str]) -> str:
    key = match[1]
    if key in values:
        return values[key]
    if key in MonitoringSettings.model_fields:
        return "0"  # an unset optional setting: the rule that `requires` it is dropped below
    raise OikyoError(f"rules template: unknown placeholder [[{key}]]")


def alert_names(rules: dict) -> list[str]:
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


def to_yaml(rules: dict, name: str) -> str:
    header = (f"# Prometheus rules of oikyo deployment {name}, written by "
              f"`oikyo deployments alerts {name} --export FILE`.\n"
              f"# Load them with `rule_files:` in prometheus.yml; docs/monitoring.md#alert-rules says what each "
              f"alert means.\n")
    return header + yaml.safe_dump(rules, sort_keys=False, width=1000, allow_unicode=True)


def export(name: str, path: str | Path | None = None) -> str:
    """The rules file of deployment ``name`` (thresholds from its record); written to ``path`` if given."""
    settings, replicas_min = settings_of(name)
    text = to_yaml(render(name, settings, replicas_min), name)
    if path is not None:
        Path(path).write_text(text)
    return text


def promtool() -> str | None:
    return shutil.which("promtool")


def check_rules(path: str | Path) -> tuple[bool, str]:
    """``promtool check rules PATH``: (passed, its output). OikyoError when promtool is not installed."""
    tool = promtool()
    if tool is None:
        raise OikyoError("promtool is not installed (Debian: apt-get install prometheus; or scripts/install-prometheus.sh)")
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    return done.returncode == 0, (done.stdout + done.stderr).strip()
