"""`oikyo tune`: hyperparameter studies whose trials are ordinary training runs; `oikyo tune list`.

Adapts :mod:`oikyo.tune.study` (create, drive, list); no tuning logic lives here. Ctrl-C stops
driving: the trials' runs go on in the workers, and ``oikyo tune --resume STUDY`` follows them again.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, fail, out
from oikyo.cli.train import user_errors

app = typer.Typer(
    help="Tune hyperparameters: an Optuna study whose trials are training runs in the queue "
         "(see docs/tuning.md). `oikyo tune --config base.yaml --trials 20` starts one.",
    invoke_without_command=True,
)

STATE_STYLE = {"running": "cyan", "finished": "green", "interrupted": "magenta", "failed": "red"}


@app.callback()
def tune(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Base training config YAML that every trial starts from (as `oikyo train --config`)."),
    space: Optional[Path] = typer.Option(None, "--space", help="Search space YAML (default: the LoRA space in src/oikyo/configs/space-lora.yaml)."),
    trials: int = typer.Option(20, "--trials", "-n", help="How many trials the study runs in all (over every driver)."),
    parallel: int = typer.Option(1, "--parallel", "-p", help="Trials this driver keeps training at once; starts workers until that many serve the queue."),
    budget: Optional[str] = typer.Option(None, "--budget", help="A cap on what trials spend: wall time (2h, 30m, 90s) or training tokens (5M-tokens, 500k-tokens). A trial starts only if its estimated cost fits what is left; trials still training when it is spent are stopped (docs/tuning.md, Budgets)."),
    objective: list[str] = typer.Option([], "--objective", "-o", help="What to optimize: val_loss (default), an evaluation metric on the validation split (e.g. json_field_accuracy), or forgetting. Repeat for a multi-objective study."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override one base config value, dotted: --set train.max_steps=100 (repeatable)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset version to tune on: id, name (its newest version) or name@id."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model: a catalog name, a local model folder, or a model version id (mv-...)."),
    name: Optional[str] = typer.Option(None, "--name", help="A unique name for the study; running again with the same name drives the same study."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="tpe (default, also for several objectives), random or nsga2."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="Stop bad trials early on their validation losses: median (default), sha (successive halving), hyperband or none. Not with several objectives."),
    cv: Optional[int] = typer.Option(None, "--cv", help="K-fold cross-validation for small data: K runs per trial on folds of train+validation (never test); the value is their mean."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of the folds."),
    join: Optional[str] = typer.Option(None, "--join", help="Drive an existing study (name or id) from this machine too; trial slots are shared, so it still runs --trials in all."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Go on with an interrupted study (name or id): follow its unfinished trials again, then launch the rest."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start background workers when fewer than --parallel serve the queue."),
) -> None:
    """Run a hyperparameter study: each trial is a training run (same records, checkpoints and lineage)."""
    if ctx.invoked_subcommand is not None:
        return
    from oikyo.tune import study as studies

    if config is not None and not config.is_file():
        fail(f"no such config file: {config}")
    if space is not None and not space.is_file():
        fail(f"no such search space file: {space}")
    if join and resume:
        fail("give --join or --resume, not both")
    with user_errors():
        record = _open_study(join or resume, name=name, config=config, overrides=set_, dataset=dataset, model=model,
                             space=space, objectives=objective or ["val_loss"], n_trials=trials, parallel=parallel,
                             budget=budget, sampler=sampler, pruner=pruner, cv=cv, seed=seed)
    if start_worker:
        _ensure_workers(record.parallel)
    stopping = "Stopping the driver (the trials' runs keep training); Ctrl-C again to quit at once."
    with _first_ctrl_c_stops(stopping) as stop, user_errors():
        info = studies.run_study(record.id, log=lambda line: err.print(line, markup=False), should_stop=stop.is_set)
    _print_outcome(info)


@contextmanager
def _first_ctrl_c_stops(message: str):
    """An event the first Ctrl-C sets (saying ``message``), so the work stops at its next check and the
    queued jobs go on in the workers; a second Ctrl-C quits at once."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(_signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        err.print(message)
        stop.set()

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _open_study(ref: Optional[str], *, name: Optional[str], **options):
    """The study to drive: the one named by --join/--resume, an existing one of --name, or a new one."""
    from oikyo.tune import study as studies

    if ref:
        record = studies.get(ref)
        err.print(f"Driving study [bold]{record.name}[/] ({record.id}): {record.launched}/{record.n_trials} trials launched so far")
        return record
    if name and studies.find(name) is not None:
        record = studies.get(name)
        err.print(f"Study [bold]{record.name}[/] exists ({record.id}); driving it (its own settings apply)")
        return record
    record = studies.create_study(options.pop("config"), options.pop("overrides"), name=name,
                                  log=lambda message: err.print(message), **options)
    err.print(f"Created study [bold]{record.name}[/] ({record.id})")
    return record


def _ensure_workers(count: int) -> None:
    from oikyo.jobs import autostart

    for started in autostart.ensure_workers(count):
        err.print(f"Started a background worker (pid {started.pid}); its log: {started.log_path}")


def _print_outcome(info: dict) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(info["counts"].items())) or "no trials"
    out.print(f"Study [bold]{info['name']}[/] ({info['id']}) {info['state']}: {counts}")
    if info["best_trials"]:
        label = "Best trial" if len(info["objectives"]) == 1 else "Pareto-optimal trials"
        out.print(f"{label}: {', '.join(str(n) for n in info['best_trials'])}")
    if info["state"] == "interrupted":
        out.print(f"`oikyo tune --resume {info['name']}` goes on with it.")
    if info["counts"] and set(info["counts"]) == {"failed"}:
        raise typer.Exit(1)


@app.command("list")
def list_(
    limit: int = typer.Option(50, "--limit", help="Show at most this many studies (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Tuning studies, newest first, with their trial counts."""
    from rich.table import Table

    from oikyo.tune import study as studies

    with user_errors():
        found = [studies.describe(record) for record in studies.list_studies(limit=limit)]
    if as_json:
        out.print_json(data=found)
        return
    if not found:
        out.print("No studies yet. Start one with `oikyo tune --config base.yaml --dataset NAME --trials 20`.")
        return
    table = Table()
    for column in ("id", "name", "state", "objectives", "trials", "complete", "pruned", "failed", "best", "created"):
        table.add_column(column, overflow="fold")
    for info in found:
        counts = info["counts"]
        style = STATE_STYLE.get(info["state"], "")
        table.add_row(info["id"], info["name"], f"[{style}]{info['state']}[/]", ", ".join(info["objectives"]),
                      f"{info['launched']}/{info['n_trials']}", str(counts.get("complete", 0)),
                      str(counts.get("pruned", 0)), str(counts.get("failed", 0)),
                      ", ".join(str(n) for n in info["best_trials"]) or "-",
                      (info["created_at"] or "-")[:19].replace("T", " "))
    out.print(table)


@app.command("show")
def show(
    study: str = typer.Argument(..., help="Study name or id (a unique id prefix is enough)."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Also copy the plots (PNG: history, importances, "
                                         "parallel coordinates, Pareto front) into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON (what GET /api/v1/studies/{id} answers)."),
) -> None:
    """The best trial (or the Pareto front), pruned and failed trials with their reasons, importances, promotions."""
    import shutil

    from oikyo.tune import report

    with user_errors():
        info = report.study_report(study)
    if as_json:
        out.print_json(data=info)
    else:
        for line in report.text_lines(info):
            out.print(line, markup=False, highlight=False)
    if plots is not None:
        with user_errors():
            drawn = report.plots(study)
        plots.mkdir(parents=True, exist_ok=True)
        for name, entry in sorted(drawn.items()):
            if "path" in entry:
                shutil.copyfile(entry["path"], plots / f"{name}.png")
                err.print(f"wrote {plots / (name + '.png')}")
            else:
                err.print(f"{name}: not drawn yet ({entry.get('skipped')})")


@app.command("promote")
def promote_(
    study: str = typer.Argument(..., help="Study name or id."),
    trial: Optional[int] = typer.Option(None, "--trial", "-t", help="The trial to promote (default: the best trial; "
                                        "with several objectives, required unless the Pareto front has one point)."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start a background worker when none serves the queue."),
    as_json: bool = typer.Option(False, "--json", help="Print the promotion and its test scores as JSON."),
) -> None:
    """Train the chosen trial's config as the final model, then evaluate it ONCE on the test split.

    The study itself never reads the test split; this is where it is read, against the base model and
    with the forgetting probe. Promoting the same trial again shows (or follows) the same promotion.
    """
    from oikyo.tune import promote

    if start_worker:
        _ensure_workers(1)
    stopping = "Stopping (the run and evaluation keep going in the worker); promote again to follow them."
    with _first_ctrl_c_stops(stopping) as stop, user_errors():
        info = promote.promote(study, trial, log=lambda line: err.print(line, markup=False), should_stop=stop.is_set)
    if as_json:
        out.print_json(data=info)
        return
    out.print(f"Promotion {info['id']} of trial {info['trial']}: {info['state']}; run {info['run_id'] or '-'}, "
              f"model version {info['model_version'] or '-'}")
    for role in ("model", "base"):
        found = info["test"].get(role)
        if found:
            scores = ", ".join(f"{k} {v:.4g}" for k, v in found["metrics"].items() if isinstance(v, float))
            forgetting = (found.get("forgetting") or {}).get("forgetting")
            extra = f", forgetting {forgetting:.3g}" if isinstance(forgetting, float) else ""
            out.print(f"  test split, {role}: {scores}{extra}  ({found['evaluation']})", markup=False)
    if info["state"] != "done":
        raise typer.Exit(1)
