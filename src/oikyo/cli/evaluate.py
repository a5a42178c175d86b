"""`oikyo eval`, `oikyo compare` and `oikyo evals list|show`: evaluation from the command line.

Every command adapts :mod:`oikyo.evaluate` (jobs, records, compare, gate, summary); no evaluation
logic lives here. Exit codes: 0 success, 1 the evaluation job failed or was cancelled, 2 a problem
with the input (unknown model or dataset, overlap refused, a gate that does not parse),
3 a ``--gate`` condition failed.
"""

from __future__ import annotations

import time
from typing import Optional

import typer

from oikyo.cli.console import err, fail, out
from oikyo.cli.train import ensure_worker, user_errors

POLL_S = 0.5

evals_app = typer.Typer(help="Stored evaluations: list and inspect them.", no_args_is_help=True)


def _parse_dataset(dataset: Optional[str], split: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    """``VERSION[:split]`` and ``--split`` -> (dataset ref, split); ``all`` means every row."""
    if dataset and ":" in dataset:
        dataset, _, in_ref = dataset.rpartition(":")
        if split and split != in_ref:
            fail(f"the split is given twice ({in_ref!r} in --dataset and {split!r} in --split)")
        split = in_ref
    split = split or "test"
    return dataset or None, None if split == "all" else split


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return "nan" if value != value else (f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}")
    return str(value)


def follow_eval(run_id: str, poll_s: float = POLL_S) -> str:
    """A live progress bar until the job ends; returns its final state."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from oikyo.jobs import runs

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(run_id, total=None)
            while True:
                now = runs.progress(run_id)
                label = f"{run_id} {now.state}" if now.state != "running" else f"{run_id} evaluating"
                bar.update(task, description=label, completed=now.step, total=now.total_steps)
                if now.finished:
                    return now.state
                time.sleep(poll_s)
    except KeyboardInterrupt:
        err.print(f"Stopped following. Evaluation [bold]{run_id}[/] continues in the background; "
                  f"`oikyo runs cancel {run_id}` stops it, `oikyo runs watch {run_id}` follows it again.")
        raise typer.Exit(0)


def print_group(group: list, as_json: bool = False) -> dict:
    """The side-by-side table of an evaluation group (model, base, few-shot), with gains and forgetting."""
    from rich.table import Table

    from oikyo.evaluate.summary import side_by_side

    table = side_by_side(group)
    if as_json:
        out.print_json(data=table)
        return table
    first = group[0]
    out.print(f"Dataset {first.dataset_version_id}{':' + first.split if first.split else ''}, {first.rows} examples; "
              f"greedy={first.generation.get('temperature') == 0}, max_new_tokens {first.generation.get('max_new_tokens')}")
    view = Table()
    view.add_column("metric", no_wrap=True)
    for s in table["systems"]:
        overlap = "\n[red]forced overlap[/]" if s["forced_overlap"] else ""
        view.add_column(f"{s['name']}{overlap}\n{s['evaluation']}", overflow="fold")
    view.add_column("model - base (95% CI)", overflow="fold")
    base = table["deltas"].get("base", {})
    for metric, values in table["metrics"].items():
        d = base.get(metric)
        gain = "-"
        if d:
            style = ("green" if d["verdict"].startswith(table["systems"][0]["name"]) else "red") if d["significant"] else "dim"
            gain = f"[{style}]{d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}][/]"
        view.add_row(metric, *(_fmt(v) for v in values), gain)
    out.print(view)
    if base:
        out.print("Gains in green/red: the 95% paired-bootstrap interval excludes 0 (significant).")
    forgetting = table["forgetting"]
    if forgetting:
        _print_forgetting(forgetting)
    if first.forced_overlap:
        out.print("[red]forced_overlap=true:[/] these rows overlap the model's training data (--force).")
    return table


def _print_forgetting(forgetting: dict) -> None:
    """The probe's verdict, its three measures, and the model's first degenerate answers (records from before
    probe version 2 have no degeneration and print without it)."""
    from oikyo.evaluate.forgetting import describe_change, describe_degeneration, example_lines

    flag = "[red]FORGETTING FLAGGED[/]" if forgetting["flagged"] else "[green]within threshold[/]"
    degenerate = describe_degeneration(forgetting)
    out.print(f"Forgetting {forgetting['forgetting']:+.3f} ({flag}, threshold {forgetting['threshold']:g}): probe "
              f"accuracy {forgetting['base']['accuracy']:.3f} -> {forgetting['model']['accuracy']:.3f} "
              f"({describe_change(forgetting)}), general-text perplexity x{forgetting['perplexity_ratio']:.3f}"
              + (f", {degenerate} on open-ended requests" if degenerate else ""))
    examples = example_lines(forgetting)
    if examples:
        out.print("Degenerate answers of the model to general requests (first few):")
        for line in examples:
            out.print(line, markup=False)


def _check_gate(conditions, group) -> None:
    from oikyo.evaluate.gate import EXIT_GATE_FAILED, check_gate, gate_values

    model = next(e for e in group if e.role == "model")
    values = gate_values(model.metrics, {e.role: e.metrics for e in group if e.role != "model"}, model.forgetting)
    with user_errors():
        outcome = check_gate(conditions, values)
    for result in outcome.results:
        mark = "[green]pass[/]" if result["passed"] else "[red]FAIL[/]"
        out.print(f"gate {result['condition']}: {_fmt(result['value'])} {mark}")
    if not outcome.passed:
        err.print(f"[bold red]gate failed:[/] {', '.join(r['condition'] for r in outcome.failures)}")
        raise typer.Exit(EXIT_GATE_FAILED)


def eval_(
    model: str = typer.Argument(..., help="Model version id, training run id, or base model name (`oikyo models list`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Dataset VERSION[:split] (default: the model's own training dataset, test split)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate on: test (default), validation, train or all."),
    metric: list[str] = typer.Option([], "--metric", "-m", help="Metric to compute (repeatable; default: chosen from the answers)."),
    metrics_module: list[str] = typer.Option([], "--metrics-module", help="Python module that registers user metrics (repeatable)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate on the first N examples only."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="Answer length limit (default: from the longest reference)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences generated together."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also evaluate the base model and a few-shot baseline."),
    few_shot_k: int = typer.Option(3, "--few-shot-k", min=0, help="Training examples in the few-shot baseline's prompt (0: none)."),
    few_shot_seed: int = typer.Option(0, "--few-shot-seed", help="Seed that picks the few-shot examples."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Run the forgetting probe on the model and its base."),
    forgetting_threshold: float = typer.Option(0.10, "--forgetting-threshold", help="Flag forgetting above this (see docs/evaluation.md)."),
    force: bool = typer.Option(False, "--force", help="Evaluate even on rows the model was trained on (marked forced_overlap)."),
    gate: Optional[str] = typer.Option(None, "--gate", help="Conditions, e.g. 'accuracy>=0.8,forgetting<=0.05'; exit 3 when one fails."),
    detach: bool = typer.Option(False, "--detach", help="Queue the evaluation, print its job id and return at once."),
    start_worker: bool = typer.Option(True, "--start-worker/--no-start-worker", help="Start a background worker when none is running."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Evaluate a model (and, for a fine-tuned one, its base model and a few-shot baseline) as a durable job."""
    from oikyo.evaluate import jobs, records
    from oikyo.evaluate.gate import parse_gate
    from oikyo.evaluate.runner import EvalSpec

    with user_errors():
        conditions = parse_gate(gate) if gate is not None else None
    if conditions and detach:
        fail("--gate needs the results: leave out --detach")
    dataset_ref, split_name = _parse_dataset(dataset, split)
    spec = EvalSpec(model=model, dataset=dataset_ref, split=split_name, metrics=list(metric) or None,
                    metric_modules=list(metrics_module), limit=limit, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, baselines=baselines, few_shot_k=few_shot_k, few_shot_seed=few_shot_seed,
                    probe=probe, forgetting_threshold=forgetting_threshold, force=force)
    with user_errors():
        run = jobs.submit_evaluation(spec)
    err.print(f"Queued evaluation [bold]{run.id}[/] ({run.name})")
    ensure_worker(start_worker)
    if detach:
        out.print(run.id)
        return
    state = follow_eval(run.id)
    if state != "succeeded":
        from oikyo.jobs import runs

        info = runs.show(run.id)
        err.print(f"[bold red]Evaluation {run.id} {state}:[/] {info['error'] or ''}\nLog: {info['log']}")
        raise typer.Exit(1)
    group = records.group(records.list_evaluations(group_id=run.id, limit=1)[0])
    print_group(group, as_json=as_json)
    if conditions:
        _check_gate(conditions, group)


def compare_(
    a: str = typer.Argument(..., help="Evaluation id, model version, run, or base model name."),
    b: str = typer.Argument(..., help="Evaluation id, model version, run, or base model name."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only evaluations on this dataset VERSION[:split]."),
    split: Optional[str] = typer.Option(None, "--split", help="Only evaluations on this split."),
    resamples: int = typer.Option(2000, "--resamples", min=100, max=100000, help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (same seed, same intervals)."),
    examples: int = typer.Option(5, "--examples", min=0, help="Examples where the two differ most, shown side by side."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare two models on the same examples: deltas with paired bootstrap 95% CIs, differing examples, config diff."""
    from oikyo.evaluate.compare import compare

    dataset_ref = dataset
    if dataset and ":" in dataset:
        dataset_ref, _, split = dataset.rpartition(":")
    with user_errors():
        report = compare(a, b, dataset=dataset_ref, split=split, resamples=resamples, seed=seed, examples=examples)
    if as_json:
        out.print_json(data=report)
        return
    _print_compare(report)


def _print_compare(report: dict) -> None:
    from rich.table import Table

    a, b = report["a"], report["b"]
    for side, info in (("A", a), ("B", b)):
        note = " [red](forced overlap)[/]" if info["forced_overlap"] else ""
        out.print(f"[bold]{side}[/] {info['name']} ({info['id']}){note}")
    out.print(f"{report['paired_examples']} paired examples of {report['dataset_version_id']}"
              f"{':' + report['split'] if report['split'] else ''}; {report['resamples']} paired bootstrap resamples, "
              f"seed {report['seed']}, {report['confidence']:.0%} intervals")
    table = Table("metric", "A", "B", "A - B", "CI", "verdict")
    for name, d in report["metrics"].items():
        style = "bold" if d["significant"] else "dim"
        table.add_row(name, _fmt(d["a"]), _fmt(d["b"]), f"{d['delta']:+.4f}",
                      f"[{d['low']:+.4f}, {d['high']:+.4f}]", f"[{style}]{d['verdict']}[/]")
    out.print(table)
    if report["examples"]:
        shown = Table("#", "question", "reference", "A", "B", title=f"Where they differ most ({report['primary_metric']})")
        for ex in report["examples"]:
            shown.add_row(str(ex["index"]), ex["question"][:200], ex["reference"][:200],
                          f"{(ex['a'] or '')[:200]}\n[dim]{_fmt(ex['score_a'])}[/]",
                          f"{(ex['b'] or '')[:200]}\n[dim]{_fmt(ex['score_b'])}[/]")
        out.print(shown)
    diff = report["config_diff"]
    out.print("[bold]Training config diff[/] (A -> B)" if diff else "Training configs: identical (or both base models)")
    for key, (va, vb) in diff.items():
        out.print(f"  {key}: {va!r} -> {vb!r}", markup=False)
    for key, (va, vb) in report["evaluation_diff"].items():
        out.print(f"  [yellow]evaluation setting differs[/] {key}: {va!r} -> {vb!r}")


@evals_app.command("list")
def list_(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only evaluations on this dataset version."),
    model: Optional[str] = typer.Option(None, "--model", help="Only evaluations of this model version id."),
    limit: int = typer.Option(50, "--limit", help="At most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Stored evaluations, newest first."""
    from rich.table import Table

    from oikyo.evaluate import records

    with user_errors():
        dataset_id = None
        if dataset:
            from oikyo.data import versions

            dataset_id = versions.resolve(dataset.rpartition(":")[0] if ":" in dataset else dataset).id
        found = records.list_evaluations(dataset=dataset_id, model_version_id=model, limit=limit)
    if as_json:
        out.print_json(data=[records.describe(e) for e in found])
        return
    if not found:
        out.print("No evaluations yet. Run one with `oikyo eval MODEL --dataset VERSION:test`.")
        return
    table = Table()
    for column in ("id", "system", "role", "dataset", "rows", "primary metric", "forgetting", "overlap", "created"):
        table.add_column(column, overflow="fold")
    for ev in found:
        primary = records.primary_metric(ev.metrics)
        value = f"{primary} {_fmt(ev.metrics[primary])}" if primary else "-"
        forgetting = (ev.forgetting or {}).get("forgetting")
        table.add_row(ev.id, records.system_name(ev), ev.role, f"{ev.dataset_version_id}:{ev.split or 'all'}",
                      str(ev.rows), value, _fmt(forgetting), "[red]forced[/]" if ev.forced_overlap else "-",
                      ev.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@evals_app.command("show")
def show(
    evaluation: str = typer.Argument(..., help="Evaluation id (or a unique prefix)."),
    examples: int = typer.Option(5, "--examples", min=0, help="Per-example outputs to show."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON (with every example)."),
) -> None:
    """One evaluation: exact model, dataset, split, metric versions, generation settings, results and examples."""
    from oikyo.evaluate import records

    with user_errors():
        ev = records.get(evaluation)
        rows = records.read_examples(ev)
    info = records.describe(ev)
    if as_json:
        out.print_json(data={**info, "examples": rows})
        return
    for key in ("id", "system", "role", "model_version_id", "base_model", "dataset_version_id", "split", "rows",
                "forced_overlap", "run_id", "created_at"):
        out.print(f"[bold]{key:>18}[/]  {info[key]}")
    out.print(f"[bold]{'generation':>18}[/]  {info['generation']}", markup=False)
    for name, value in ev.metrics.items():
        out.print(f"[bold]{name:>18}[/]  {_fmt(value)}  (metric version {ev.metric_versions.get(name)})")
    if ev.forgetting:
        f = ev.forgetting
        from oikyo.evaluate.forgetting import describe_degeneration

        degenerate = describe_degeneration(f)
        out.print(f"[bold]{'forgetting':>18}[/]  {f['forgetting']:+.3f} ({'FLAGGED' if f['flagged'] else 'ok'}); "
                  f"probe accuracy {f['base']['accuracy']:.3f} -> {f['model']['accuracy']:.3f}, "
                  f"perplexity ratio {f['perplexity_ratio']:.3f}" + (f", {degenerate}" if degenerate else ""))
    for row in rows[:examples]:
        out.print(f"\n[bold]#{row['index']}[/] {row['question'][:300]}", markup=False)
        out.print(f"  reference:  {row['reference'][:300]}", markup=False)
        out.print(f"  prediction: {(row['prediction'] or '')[:300]}", markup=False)


def print_leaderboard(dataset: str, *, metric: Optional[str] = None, split: Optional[str] = None,
                      as_json: bool = False) -> None:
    """Print the ranking of every model evaluated on a dataset (`oikyo models leaderboard`)."""
    from rich.table import Table

    from oikyo.evaluate import records

    if ":" in dataset:
        dataset, _, split = dataset.rpartition(":")
    with user_errors():
        board = records.leaderboard(dataset, split=split, metric=metric)
    if as_json:
        out.print_json(data=board)
        return
    order = "higher is better" if board["higher_is_better"] else "lower is better"
    table = Table(title=f"{board['dataset_name']}@{board['dataset']}: {board['metric']} ({order})")
    for column in ("rank", "model", "role", board["metric"], "split", "rows", "forgetting", "overlap", "evaluation"):
        table.add_column(column, overflow="fold")
    for row in board["rows"]:
        table.add_row(str(row["rank"]), row["system"], row["role"], _fmt(row["value"]), row["split"] or "all",
                      str(row["rows"]), _fmt(row["forgetting"]), "[red]forced[/]" if row["forced_overlap"] else "-",
                      row["evaluation"])
    out.print(table)
