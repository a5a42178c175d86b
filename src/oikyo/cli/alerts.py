"""`oikyo deployments alerts NAME`: the Prometheus alert rules of a deployment, with its thresholds.

Adapts :mod:`oikyo.monitor.alerts` (no rule logic here). Registered in cli/deploy.py::

    oikyo deployments alerts support                          # print the rules (YAML)
    oikyo deployments alerts support --set p99_latency_s=10 --set slo_availability=0.999
    oikyo deployments alerts support --export rules.yaml --check
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, out
from oikyo.cli.train import user_errors


def alerts(
    name: str = typer.Argument(..., help="Deployment name."),
    export: Optional[Path] = typer.Option(None, "--export", "-o", help="Write the rules to this file (for "
                                          "Prometheus' rule_files:) instead of printing them."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Record a monitoring setting first, KEY=VALUE "
                                             "(repeatable; VALUE 'default' resets it), e.g. p99_latency_s=10, "
                                             "slo_availability=0.999, queue_depth=64. Listed with --settings; "
                                             "docs/monitoring.md#alert-rules."),
    check: bool = typer.Option(False, "--check", help="Run `promtool check rules` on the rules (skipped, saying "
                                                      "so, when promtool is not installed)."),
    settings: bool = typer.Option(False, "--settings", help="Print the deployment's monitoring settings "
                                                            "(thresholds) instead of the rules."),
) -> None:
    """Prometheus recording and alerting rules for a deployment, thresholds from its settings."""
    from oikyo.monitor import alerts as rules

    with user_errors():
        if set_:
            recorded = rules.set_thresholds(name, rules.parse_assignments(set_))
            err.print(f"Recorded monitoring settings of {name}: "
                      + ", ".join(f"{k}={v}" for k, v in recorded.model_dump(exclude_defaults=True).items()))
        if settings:
            current, replicas_min = rules.settings_of(name)
            out.print_json(data={**current.model_dump(), "replicas_min": replicas_min})
            return
        text = rules.export(name, export)
    if export is None:
        out.print(text, markup=False, highlight=False, end="")
    else:
        err.print(f"Wrote {export}: load it with `rule_files: [{export.name}]` in prometheus.yml")
    if check:
        _check(text, export)


def _check(text: str, path: Path | None) -> None:
    from oikyo.monitor import alerts as rules

    if rules.promtool() is None:
        err.print("promtool is not installed, so the rules were not checked (Debian: apt-get install prometheus)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = Path(tmp) / "rules.yaml"
            path.write_text(text)
        passed, output = rules.check_rules(path)
    err.print(output, markup=False, highlight=False)
    if not passed:
        raise typer.Exit(1)
