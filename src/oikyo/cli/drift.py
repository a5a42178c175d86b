"""`oikyo deployments drift NAME`: has live traffic drifted from the data the model was trained on?

Adapts :func:`oikyo.monitor.drift.check` (once) and :func:`oikyo.monitor.drift.watch` (``--every``);
the detectors, their calibration and the records live in :mod:`oikyo.monitor`.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from oikyo.cli.console import err, out
from oikyo.cli.train import user_errors

EXAMPLES_SHOWN = 3


def drift(
    name: str = typer.Argument(..., help="Deployment name."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Dataset version to compare with "
                                            "(id, name or name@id; default: each variant's training data, "
                                            "found through its model version's lineage)."),
    window: int = typer.Option(200, "--window", "-w", min=10, help="Newest logged requests per variant to check."),
    false_alarm_every: float = typer.Option(10000, "--false-alarm-every", min=1, help="Expected requests between "
                                            "two false alarms; every detector's threshold is calibrated from it."),
    every: Optional[float] = typer.Option(None, "--every", min=1, help="Keep checking: look every SECONDS and check "
                                          "a variant again once --window new requests came in (Ctrl-C stops)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Check this variant only."),
    reference_rows: int = typer.Option(1000, "--reference-rows", min=40, help="Reference rows sampled (half to "
                                       "compare with, half to calibrate the thresholds on)."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Compare inputs by the served base "
                                    "model's hidden states (loads the model; see --nice)."),
    nice: int = typer.Option(19, "--nice", min=0, max=19, help="CPU priority of the embedding worker (in a session "
                             "of its own, so it counts against the deployment's processes too): at 19 it uses the "
                             "cores serving leaves idle, so checks wait while the replicas are busy; 0 embeds in "
                             "this process at its priority."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check whether a deployment's logged traffic drifted from its reference, and say what changed.

    Each detector's score is its statistic over its calibrated threshold: above 1 is an alarm. Checks
    are recorded (oikyo_drift_score on the router's /metrics) and an alarm is a deployment event.
    Needs a deployment started with --log-requests. The embeddings, the check's only heavy work,
    yield the CPU to serving on the same machine (--nice). Guide: docs/monitoring.md (Drift).
    """
    from oikyo.monitor import drift as drift_api

    with user_errors():
        settings = drift_api.DriftSettings(window=window, false_alarm_every=false_alarm_every,
                                           reference_rows=reference_rows, embeddings=embeddings, nice=nice)
        if every is not None:
            err.print(f"Checking {name} every {every:g} s once {window} new requests came in (Ctrl-C stops) ...")
            try:
                drift_api.watch(name, every, settings=settings, reference=reference,
                                on_report=lambda report: _show_variant(report, as_json))
            except KeyboardInterrupt:
                return
            return
        report = drift_api.check(name, settings=settings, reference=reference, variant=variant)
    if as_json:
        out.print_json(data=report.to_dict())
    else:
        out.print(f"Drift check of [bold]{name}[/]: windows of {window} requests, thresholds for one false alarm "
                  f"per {false_alarm_every:g} requests")
        for item in report.variants:
            _show_variant(item, False)
    if all(v.skipped for v in report.variants):
        err.print("[bold red]error:[/] nothing was checked: too few logged requests in the window")
        raise typer.Exit(1)


def _show_variant(report, as_json: bool) -> None:
    if as_json:
        out.print_json(data={"variant": report.variant, "skipped": report.skipped, "alarm": report.alarm,
                             "findings": [f.__dict__ for f in report.findings]})
        return
    if report.skipped:
        out.print(f"[bold]{report.variant}[/]: not checked: {report.skipped}")
        return
    alarms = [f for f in report.findings if f.alarm]
    verdict = (f"[bold red]DRIFT[/] ({len(alarms)} of {len(report.findings)} detectors)" if alarms
               else "[green]no drift[/]")
    out.print(f"[bold]{report.variant}[/]: {verdict} in {report.requests} requests "
              f"({_time(report.window_start)} to {_time(report.window_end)}) against {report.reference}")
    table = Table("detector", "score", "alarm", "what moved")
    for f in sorted(report.findings, key=lambda f: -f.score):
        table.add_row(f.detector, f"{f.score:.2f}", "[red]ALARM[/]" if f.alarm else "-", escape(f.what))
    out.print(table)
    for f in alarms:
        if f.examples:
            out.print(f"Most distinctive inputs ({f.detector}):")
            for example in f.examples[:EXAMPLES_SHOWN]:
                out.print(f"  - {escape(repr(example['input']))}  [dim]{escape(example['why'])} · {example['id']}[/]")


def _time(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "?"
