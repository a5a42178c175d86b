"""`oikyo runs ...`: list, inspect, follow, cancel, resume and reproduce training runs.

Every command adapts one function of :mod:`oikyo.jobs.runs`; no job logic lives here.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from oikyo.cli.console import err, out
from oikyo.cli.train import ensure_worker, follow_run, hand_off, user_errors

app = typer.Typer(help="List, inspect, follow, cancel, resume and reproduce training runs.", no_args_is_help=True)

STATE_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "magenta"}


def _when(moment: Optional[str]) -> str:
    return moment[:19].replace("T", " ") if moment else "-"


@app.command("list")
def list_(
    state: Optional[str] = typer.Option(None, "--state", help="Only runs in this state: queued, running, succeeded, failed, cancelled."),
    limit: int = typer.Option(50, "--limit", help="Show at most this many runs (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Training runs, newest first."""
    from rich.table import Table

    from oikyo.jobs import runs

    with user_errors():
        found = runs.list_runs(state=state, limit=limit)
    if as_json:
        out.print_json(data=[runs.describe(r) for r in found])
        return
    if not found:
        out.print("No runs yet. Start one with `oikyo train --dataset NAME --model MODEL`.")
        return
    table = Table()
    for column in ("id", "name", "state", "model", "dataset", "created", "error"):
        table.add_column(column, overflow="fold")
    for run in found:
        info = runs.describe(run)
        style = STATE_STYLE.get(run.state, "")
        table.add_row(run.id, run.name, f"[{style}]{run.state}[/]", run.base_model, run.dataset_version_id or "-",
                      _when(info["created_at"]), (run.error or "")[:80])
    out.print(table)


@app.command("show")
def show(
    run: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
) -> None:
    """A run's state, progress, error, checkpoints, model versions and history."""
    from oikyo.jobs import runs

    with user_errors():
        info = runs.show(run)
    if as_json:
        out.print_json(data=info)
        return
    style = STATE_STYLE.get(info["state"], "")
    out.print(f"[bold]{info['id']}[/] {info['name']}: [{style}]{info['state']}[/]")
    if info["error"]:
        out.print(f"[bold red]error:[/] {info['error']}")
    progress = info["progress"]
    total = f"/{progress['total_steps']}" if progress["total_steps"] else ""
    latest = ", ".join(f"{k} {v:.4g}" for k, v in sorted(progress["latest"].items()))
    rows = [("model", info["base_model"]), ("dataset", info["dataset_version"]), ("seed", info["seed"]),
            ("config hash", info["config_hash"][:16]), ("step", f"{progress['step']}{total}"), ("latest", latest or "-"),
            ("attempts", info["attempts"]), ("resumes", info["resume_count"]), ("created", _when(info["created_at"])),
            ("started", _when(info["started_at"])), ("finished", _when(info["finished_at"])),
            ("run dir", info["run_dir"]), ("log", info["log"])]
    if info["reproduced_from"]:
        rows.append(("reproduces", info["reproduced_from"]))
    for key, value in rows:
        out.print(f"[bold]{key:>12}[/]  {value}")
    for mv in info["model_versions"]:
        out.print(f"[bold]{'model':>12}[/]  {mv['id']} ({mv['kind']}) {mv['path']}")
    for c in info["checkpoints"]:
        loss = f" eval_loss {c['eval_loss']:.4f}" if c["eval_loss"] is not None else ""
        out.print(f"[bold]{'checkpoint':>12}[/]  step {c['step']}{loss}{' (best)' if c['is_best'] else ''}  {c['path']}")
    out.print("[bold]     history[/]")
    for event in info["events"]:
        out.print(f"  {_when(event['time'])}  {event['kind']:<10} {event['message']}")


@app.command("logs")
def logs(
    run: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the run ends."),
    tail: Optional[int] = typer.Option(None, "--tail", help="Only the last N lines (without --follow)."),
) -> None:
    """The run's train.log."""
    from oikyo.jobs import runs

    with user_errors():
        if not follow:
            for line in runs.read_log(run, tail=tail):
                out.print(line, markup=False)
            return
        try:
            for line in runs.follow_log(run):
                out.print(line, markup=False)
        except KeyboardInterrupt:
            err.print("Stopped following; the run goes on.")


@app.command("watch")
def watch(run: str = typer.Argument(..., help="Run id (or a unique prefix).")) -> None:
    """Follow a run with a live progress bar (Ctrl-C stops watching, not the run)."""
    from oikyo.jobs import runs

    with user_errors():
        run_id = runs.resolve(run).id
    code = follow_run(run_id)
    if code:
        raise typer.Exit(code)


@app.command("metrics")
def metrics(
    run: str = typer.Argument(..., help="Run id (or a unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Every metric row as JSON (step, name, value, time)."),
    name: list[str] = typer.Option([], "--name", help="Only these metrics (repeatable), e.g. --name loss."),
) -> None:
    """The metrics a run reported: a table per step, or every row as JSON."""
    from rich.table import Table

    from oikyo.jobs import runs

    with user_errors():
        if as_json:
            rows = runs.metric_rows(run)
            out.print(json.dumps([r for r in rows if not name or r["name"] in name]))
            return
        series = runs.metric_series(run, name or None)
    if not series:
        out.print("No metrics yet.")
        return
    names = sorted(series)
    by_step: dict[int, dict[str, float]] = {}
    for metric, points in series.items():
        for step, value in points:
            by_step.setdefault(step, {})[metric] = value
    table = Table()
    table.add_column("step", justify="right")
    for metric in names:
        table.add_column(metric, justify="right")
    for step in sorted(by_step):
        table.add_row(str(step), *(f"{by_step[step][m]:.6g}" if m in by_step[step] else "" for m in names))
    out.print(table)


@app.command("cancel")
def cancel(run: str = typer.Argument(..., help="Run id (or a unique prefix).")) -> None:
    """Cancel a run: a queued one at once; a running one saves a checkpoint and stops."""
    from oikyo.jobs import runs

    with user_errors():
        message = runs.cancel(run)
    out.print(message)


@app.command("resume")
def resume(
    run: str = typer.Argument(..., help="Run id (or a unique prefix) of a failed or cancelled run."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start a background worker when none is running."),
) -> None:
    """Queue a failed or cancelled run again; it continues from its last complete checkpoint."""
    from oikyo.jobs import runs

    with user_errors():
        record = runs.resume(run)
    out.print(f"Run {record.id} is queued again; it continues from its last complete checkpoint.")
    ensure_worker(start_worker)


@app.command("reproduce")
def reproduce(
    run: str = typer.Argument(..., help="Run id (or a unique prefix) to train again."),
    detach: bool = typer.Option(False, "--detach", help="Queue it, print the new run id and return at once."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start a background worker when none is running."),
) -> None:
    """Queue a new run from a run's recorded config: same dataset version, same seed."""
    from oikyo.jobs import runs

    with user_errors():
        record = runs.reproduce(run)
    err.print(f"Queued run [bold]{record.id}[/], reproducing {record.reproduced_from}.")
    hand_off(record.id, start_worker=start_worker, detach=detach)
