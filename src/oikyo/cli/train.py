"""`oikyo train`: queue a training run and follow it live.

Adapts :mod:`oikyo.jobs.training` (validate, resolve, queue), :mod:`oikyo.jobs.autostart` (a
background worker when none is running) and :mod:`oikyo.jobs.runs` (progress); no training logic
lives here. Ctrl-C while following only stops following: the run goes on in the worker.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, fail, out

POLL_S = 0.5


@contextmanager
def user_errors():
    """Print problems the user can fix as a plain message (exit 2), never a traceback."""
    from oikyo.errors import OikyoError

    try:
        yield
    except OikyoError as error:
        fail(str(error))


def ensure_worker(start: bool) -> None:
    """Start a background worker unless one is serving the queue (or say that none is, when not starting one)."""
    from oikyo.jobs import autostart

    if not start:
        if not autostart.worker_alive():
            err.print("No worker is running; start one with `oikyo worker`.")
        return
    started = autostart.ensure_worker()
    if started is not None:
        err.print(f"Started a background worker (pid {started.pid}); its log: {started.log_path}")


def hand_off(run_id: str, *, start_worker: bool, detach: bool) -> None:
    """After queueing a training run: make sure a worker serves it, then print its id (``--detach``)
    or follow it live, exiting with the follower's code when the run did not succeed."""
    ensure_worker(start_worker)
    if detach:
        out.print(run_id)
        return
    code = follow_run(run_id)
    if code:
        raise typer.Exit(code)


def _format_stats(values: dict) -> str:
    parts = []
    for key, label, spec in (("loss", "loss", ".4f"), ("eval_loss", "eval", ".4f"), ("lr", "lr", ".2e"),
                             ("tokens_per_s", "tok/s", ".0f")):
        if key in values:
            parts.append(f"{label} {values[key]:{spec}}")
    return "  ".join(parts)


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    seconds = int(seconds)
    return f"ETA {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def follow_run(run_id: str, poll_s: float = POLL_S) -> int:
    """Show a live progress bar until the run ends; returns the exit code (0 only when it succeeded)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from oikyo.jobs import runs

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[eta]}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(run_id, total=None, stats="", eta="")
            while True:
                now = runs.progress(run_id)
                label = f"{run_id} {now.state}" if now.state != "running" else run_id
                bar.update(task, description=label, completed=now.step, total=now.total_steps,
                           stats=_format_stats(now.values), eta=_format_eta(now.eta_s) if now.state == "running" else "")
                if now.finished:
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        err.print(f"Stopped following. Run [bold]{run_id}[/] continues in the background; "
                  f"`oikyo runs cancel {run_id}` stops it, `oikyo runs logs {run_id} --follow` follows it again.")
        return 0
    return _print_outcome(run_id)


def _print_outcome(run_id: str) -> int:
    from oikyo.jobs import runs

    info = runs.show(run_id)
    if info["state"] == "succeeded":
        versions = ", ".join(f"{mv['id']} ({mv['kind']}, {mv['path']})" for mv in info["model_versions"]) or "none"
        out.print(f"Run [bold]{run_id}[/] succeeded. Model version: {versions}")
        return 0
    if info["state"] == "failed":
        err.print(f"[bold red]Run {run_id} failed:[/] {info['error']}\nLog: {info['log']}; "
                  f"`oikyo runs resume {run_id}` continues from its last checkpoint.")
        return 1
    err.print(f"Run [bold]{run_id}[/] was cancelled; `oikyo runs resume {run_id}` continues it.")
    return 1


def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Training config YAML (every knob; see the configuration reference in docs/training.md)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override one config value, dotted: --set train.lr=1e-4 (repeatable)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset version to train on: id, name (its newest version) or name@id."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model: a catalog name (`oikyo models list`), a local model folder, or a model version id (mv-..., `oikyo models versions`) to go on from a trained model."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="A name for the run (default: dataset and model names)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Training processes on this machine (same as --set train.nproc=N): the worker launches them with torchrun; lora or full (grpo: lora)."),
    detach: bool = typer.Option(False, "--detach", help="Queue the run, print its id and return at once."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start a background worker when none is running."),
) -> None:
    """Queue a fine-tuning run (config file and/or --dataset/--model) and follow it live."""
    from oikyo.jobs import training

    if config is not None and not config.is_file():
        fail(f"no such config file: {config}")
    if nproc is not None:
        set_ = [*set_, f"train.nproc={nproc}"]
    with user_errors():
        run = training.submit_training(config, set_, dataset=dataset, model=model, name=name,
                                       log=lambda message: err.print(message))
    err.print(f"Queued run [bold]{run.id}[/] ({run.name}): {run.run_dir}")
    hand_off(run.id, start_worker=start_worker, detach=detach)
