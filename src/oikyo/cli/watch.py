"""`oikyo deployments watch NAME`: a deployment's health, live in the terminal, without Prometheus.

Renders :func:`oikyo.monitor.snapshot.take` (traffic, latency, replicas, queue depth, quality flags,
drift scores, what is firing, recent events) with Rich, refreshed every ``--interval`` seconds until
Ctrl-C. ``--once`` prints one snapshot and exits (``--json`` as JSON), for scripts and tests.
"""

from __future__ import annotations

import os
import time
from typing import Optional

import typer

from oikyo.cli.console import out
from oikyo.cli.train import user_errors


def _num(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}{unit}"


def render(view: dict):
    """The snapshot as Rich renderables (one group)."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    t = view["traffic"]
    minutes = view["window_s"] / 60
    head = Text.from_markup(f"[bold]{escape(view['deployment'])}[/] {view['status']} at {view['url']} "
                            f"[dim](last {minutes:g} min, {time.strftime('%H:%M:%S')})[/]")
    signals = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("requests/s", "error rate", "p50 latency", "p99 latency", "p50 TTFT", "p99 TTFT",
                   "queue", "in flight", "replicas"):
        signals.add_column(column, justify="right")
    router = view["router"] or {}
    replicas = ", ".join(f"{pool}: " + " ".join(f"{n} {state}" for state, n in states.items())
                         for pool, states in view["replicas"].items()) or "—"
    error_style = "bold red" if t["error_rate"] > 0.05 else ""
    signals.add_row(_num(t["requests_per_s"]), Text(_num(t["error_rate"], "%", 100, 1), style=error_style),
                    _num(t["latency_p50_s"], " s"), _num(t["latency_p99_s"], " s"), _num(t["ttft_p50_s"], " s"),
                    _num(t["ttft_p99_s"], " s"), _num(router.get("queue_depth"), digits=0),
                    _num(router.get("in_flight"), digits=0), replicas)
    parts = [head, signals]
    if view["quality"]:
        quality = Table("variant", "checked", "degenerate", "refusal", "empty", "invalid JSON", "schema mismatch",
                        "negative feedback", title="quality flags (share of checked answers)", title_justify="left",
                        box=None, header_style="bold")
        for variant, q in view["quality"].items():
            quality.add_row(escape(str(variant)), str(q["checked"]), *(_num(q.get(f"{f}_share"), "%", 100, 1) for f in
                            ("degenerate", "refusal", "empty", "invalid_json", "schema_mismatch",
                             "negative_feedback")))
        parts.append(quality)
    if view["drift"]:
        drift = Table("variant", "detector", "score", "requests", "checked at", title="drift (score > 1: drift)",
                      title_justify="left", box=None, header_style="bold")
        for d in view["drift"]:
            drift.add_row(escape(str(d["variant"] or "all")), d["detector"],
                          Text(_num(d["score"]), style="bold red" if d["alarm"] else ""), str(d["requests"]),
                          (d["at"] or "")[:19])
        parts.append(drift)
    for e in view["firing"]:
        parts.append(Text.from_markup(f"[bold red]firing[/] {escape(e['title'])} "
                                      f"[dim]({e['severity'] or 'no severity'}, since {e['time'][:19]})[/]"))
    if not view["firing"]:
        parts.append(Text("nothing firing", style="green"))
    for e in view["events"]:
        parts.append(Text.from_markup(f"  [dim]{e['time'][:19]}[/] {e['kind']} {escape(e['title'])}"))
    for note in view["notes"]:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def watch(name: str = typer.Argument(..., help="Deployment name."),
          window: float = typer.Option(5.0, "--window", "-w", min=0.1, help="Minutes of traffic each figure covers."),
          interval: float = typer.Option(2.0, "--interval", "-i", min=0.2, help="Seconds between refreshes."),
          key: Optional[str] = typer.Option(None, "--key", envvar="OIKYO_API_KEY", help="An API key, to read "
                                            "queue depth and requests in flight from the router's /metrics "
                                            "(default: $OIKYO_API_KEY; without one they are left out)."),
          once: bool = typer.Option(False, "--once", help="Print one snapshot and exit."),
          as_json: bool = typer.Option(False, "--json", help="With --once: print the snapshot as JSON.")) -> None:
    """Live view of a deployment: requests/s, error rate, p50/p99 latency and time to first token,
    queue depth and replicas, quality flags, drift scores, what is firing and recent events. Ctrl-C stops."""
    from rich.live import Live

    from oikyo.monitor import snapshot

    window_s = window * 60

    def take() -> dict:
        with user_errors():
            return snapshot.take(name, window_s=window_s, api_key=key or os.environ.get("OIKYO_API_KEY"))

    if once:
        view = take()
        if as_json:
            out.print_json(data=view)
        else:
            out.print(render(view))
        return
    try:
        with Live(render(take()), console=out, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(take()), refresh=True)
    except KeyboardInterrupt:
        return
