"""`oikyo data ...`: import, inspect, split and export datasets, and make them from production traffic.

Every command adapts one function of :mod:`oikyo.data`; no data logic lives here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from oikyo.cli.console import err, out

app = typer.Typer(help="Import, check, version, split and export datasets.", no_args_is_help=True)

MAX_SHOWN_PROBLEMS = 20


@contextmanager
def _byte_progress(label: str, enabled: bool):
    """A progress bar fed with (bytes done, bytes total); a no-op when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def print_problems(result, console=err) -> None:
    """The first problems in full, then exact counts per error class."""
    from rich.table import Table

    if result.question:
        console.print(f"[bold yellow]The format is not clear.[/] {result.question}")
    problems = result.problems[:MAX_SHOWN_PROBLEMS]
    if problems:
        table = Table(title="Problems found", title_justify="left")
        for column in ("where", "field", "error", "message"):
            table.add_column(column, overflow="fold")
        for p in problems:
            table.add_row(p.location(), p.field or "", p.error, p.message)
        console.print(table)
    counts = result.problem_counts
    if counts:
        summary = ", ".join(f"{n} {error}" for error, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        shown = min(len(result.problems), MAX_SHOWN_PROBLEMS)
        console.print(f"{sum(counts.values())} problem(s) in all ({summary}); first {shown} shown.")


def _token_counter(model: Optional[str]):
    """A picklable row-length function for ``model`` (None: no token counting)."""
    if not model:
        return None
    from oikyo.models.catalog import token_counter

    return token_counter(model)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="The file: JSONL, JSON array, CSV, TSV, Parquet, or plain text (.txt, .md), optionally .gz."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Dataset name (default: from the file name)."),
    format: str = typer.Option("auto", "--format", "-f", help="Input format, or auto to detect it: openai, sharegpt, alpaca, prompt_completion, text, preference, kto, classification."),
    map_: list[str] = typer.Option([], "--map", help="Use a source column for a format field: --map instruction=question (repeatable)."),
    drop: list[str] = typer.Option([], "--drop", help="Leave out a source column the format does not use, such as an id or url (repeatable)."),
    keep: list[str] = typer.Option([], "--keep", help="Keep a source column the format does not use as row metadata, exported with the rows (repeatable)."),
    on_error: str = typer.Option("fail", "--on-error", help="fail: store nothing if any row is invalid; skip: keep the valid rows and record the dropped ones."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Check lengths and count tokens with this model's tokenizer (a catalog name or a local model folder)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest allowed example in tokens (default with --model: the model's context length)."),
    min_rows: int = typer.Option(1, "--min-rows", help="Fewest valid rows accepted for training."),
    text_unit: Optional[str] = typer.Option(None, "--text-unit", help="Plain text (.txt, .md): line (one document per line) or block (documents separated by blank lines); default: detected."),
    eval_set: bool = typer.Option(False, "--eval-set", help="Register this version as an evaluation set (other data is checked for leakage into it)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Show the quality report after importing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate a file and store it as an immutable, content-addressed dataset version.

    The format is detected and shown; every problem is reported with its line (JSONL/CSV) or
    record index (JSON), field, error class and message. Exit code 1 when validation fails.
    """
    from oikyo.data import versions
    from oikyo.store import disk

    counter = _token_counter(model)
    if counter is not None and max_tokens is None:
        max_tokens = counter.context_length
    with _byte_progress(f"Importing {path.name}", enabled=not as_json) as progress, \
            disk.errors(f"could not import {path.name}", "no dataset version was stored"):
        try:
            outcome = versions.import_dataset(
                path, name=name, format=format, mapping=versions.parse_mapping(map_), drop=drop, keep=keep,
                on_error=on_error,
                length_fn=counter, max_tokens=max_tokens, min_rows=min_rows, eval_set=eval_set,
                lineage_extra={"model": model} if model else None, progress=progress, text_unit=text_unit,
            )
        except versions.ImportFailed as failure:
            if as_json:
                out.print_json(data={"ok": False, "question": failure.result.question,
                                     "problem_counts": failure.result.problem_counts,
                                     "problems": [p.to_dict() for p in failure.result.problems]})
            else:
                print_problems(failure.result)
                err.print("[red]Nothing was stored.[/] Fix the file, or pass --on-error skip to keep the valid rows.")
            raise typer.Exit(1)
    version, result = outcome.version, outcome.result
    if as_json:
        out.print_json(data={"ok": True, "existed": outcome.existed, "detected_format": result.format,
                             "text_layout": result.text_layout, "dropped": result.dropped,
                             "version": versions.describe(version)})
        return
    out.print(f"Detected format: [bold]{result.format}[/] ({_layout_note(result.text_layout) or 'kind: ' + result.kind})")
    if result.dropped:
        err.print(f"[yellow]Skipped {result.dropped} invalid row(s)[/]; `oikyo data show {version.id} --dropped` lists them.")
        print_problems(result)
    verb = "Already stored as" if outcome.existed else "Stored"
    out.print(f"{verb} dataset [bold]{version.name}@{version.id}[/]: {version.rows} rows")
    if report:
        _print_report(version, counter)


def _layout_note(layout: dict | None) -> str:
    """How a plain-text file was cut into documents: "one document per line, detected; 2 blank lines skipped"."""
    if layout is None:
        return ""
    from oikyo.data.plaintext import TEXT_UNIT_NAMES

    note = f"{TEXT_UNIT_NAMES[layout['unit']]}, {'detected' if layout['detected'] else 'as given by --text-unit'}"
    if layout["unit"] == "line" and layout["blank_lines"]:
        n = layout["blank_lines"]
        note += f"; {n} blank line{'s' if n != 1 else ''} skipped"
    return note


def _print_report(version, counter) -> None:
    from oikyo.data import quality, versions

    result = versions.quality_report(version, count_tokens=counter.text if counter else None)
    quality.render_report(result, out)


@app.command("report")
def report_(
    dataset: str = typer.Argument(..., help="Dataset version: id, name (newest version) or name@id."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Count tokens with this model's tokenizer (default: whitespace words, or characters for text written without spaces such as Chinese, Japanese or Thai)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Quality report: tokens, lengths, duplicates, short answers, roles, labels, personal data, leakage."""
    from oikyo.data import quality, versions

    version = versions.resolve(dataset)
    counter = _token_counter(model)
    result = versions.quality_report(version, count_tokens=counter.text if counter else None)
    if as_json:
        out.print_json(data=result)
    else:
        out.print(f"Quality report for [bold]{version.name}@{version.id}[/] ({version.kind}, {version.rows} rows)")
        quality.render_report(result, out)


@app.command("list")
def list_(
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Only versions of this dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List dataset versions, newest first."""
    from rich.table import Table

    from oikyo.data import versions

    found = versions.list_versions(name)
    if as_json:
        out.print_json(data=[versions.describe(v) for v in found])
        return
    if not found:
        out.print("No datasets yet. Import one with `oikyo data import FILE`.")
        return
    table = Table("version", "name", "kind", "format", "rows", "splits", "parent", "created")
    for v in found:
        splits = " ".join(f"{k}={n}" for k, n in sorted((v.splits or {}).items())) or "-"
        flag = " (eval set)" if v.is_eval_set else ""
        table.add_row(v.id, v.name + flag, v.kind, v.format or "-", str(v.rows), splits, v.parent_id or "-",
                      v.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@app.command("show")
def show(
    dataset: str = typer.Argument(..., help="Dataset version: id, name (newest version) or name@id."),
    rows: int = typer.Option(3, "--rows", help="How many rows to preview."),
    dropped: bool = typer.Option(False, "--dropped", help="List the rows an import with --on-error skip left out."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show a version: kind, rows, splits, lineage, and a preview of its rows."""
    from itertools import islice

    from oikyo.data import versions

    version = versions.resolve(dataset)
    info = versions.describe(version)
    preview = list(islice(versions.iter_rows(version), rows))
    if as_json:
        info["preview"] = preview
        if dropped:
            info["dropped_rows"] = versions.dropped_rows(version)
        out.print_json(data=info)
        return
    for key in ("id", "name", "kind", "format", "rows", "splits", "parent", "eval_set", "created_at", "content_hash"):
        out.print(f"[bold]{key:>12}[/]  {info[key]}")
    out.print("[bold]     lineage[/]")
    out.print_json(data=info["lineage"])
    if dropped:
        out.print("[bold]dropped rows[/]")
        for problem in versions.dropped_rows(version):
            out.print(f"  {problem}")
    for i, row in enumerate(preview):
        out.print(f"[bold]row {i}[/]")
        out.print(json.dumps(row, ensure_ascii=False, indent=1)[:2000])


@app.command("split")
def split(
    dataset: str = typer.Argument(..., help="Dataset version to split."),
    validation: float = typer.Option(0.1, "--validation", help="Share of rows for validation."),
    test: float = typer.Option(0.1, "--test", help="Share of rows for test."),
    seed: int = typer.Option(0, "--seed", help="The same seed always gives the same split."),
    stratify: str = typer.Option("auto", "--stratify", help="auto: stratify by label when rows have labels; yes; no."),
) -> None:
    """Split into train/validation/test: deterministic, stratified by label, duplicates never straddle splits.

    Makes a new version (the original is immutable) whose rows carry their split.
    """
    from oikyo.data.split import split_dataset

    version, existed = split_dataset(dataset, validation=validation, test=test, seed=seed, stratify=stratify)
    counts = ", ".join(f"{k} {n}" for k, n in sorted(version.splits.items()))
    verb = "Already stored as" if existed else "Stored"
    out.print(f"{verb} split version [bold]{version.name}@{version.id}[/] (parent {version.parent_id}): {counts}")


@app.command("export")
def export(
    dataset: str = typer.Argument(..., help="Dataset version to export."),
    to: str = typer.Option(..., "--to", help="openai, sharegpt, alpaca, jsonl (canonical rows) or parquet."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="Output file or folder (default: NAME-ID[-SPLIT].FORMAT.jsonl here)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split: train, validation or test."),
) -> None:
    """Export a version (or one split of it) for other tools."""
    from oikyo.data.export import export_version

    path, count = export_version(dataset, to, out_path, split=split)
    out.print(f"Wrote {count} rows to {path}")


@app.command("eval-set")
def eval_set(
    dataset: str = typer.Argument(..., help="Dataset version to (un)register as an evaluation set."),
    unset: bool = typer.Option(False, "--unset", help="Remove the mark instead."),
) -> None:
    """Register a version as an evaluation set: reports then flag any other data that leaks into it."""
    from oikyo.data import versions

    version = versions.set_eval_set(dataset, not unset)
    state = "is now" if not unset else "is no longer"
    out.print(f"{version.name}@{version.id} {state} an evaluation set")


@app.command("from-traffic")
def from_traffic(
    deployment: str = typer.Argument(..., help="The deployment whose logged requests and feedback become the dataset."),
    since: Optional[str] = typer.Option(None, "--since", help="Only requests from then on: an ISO time (2026-12-01, 2026-12-01T08:00Z) or a duration back from now (30m, 12h, 7d, 2w). Default: all recorded requests."),
    feedback: list[str] = typer.Option([], "--feedback", help="Which answers to keep: positive (rated up, kept as answered) and/or corrected (the user's correction replaces the answer); repeatable or comma-separated. Default: both."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Dataset name (default: DEPLOYMENT-traffic)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result, with the counts per reason, as JSON."),
) -> None:
    """Make a dataset version from a deployment's production traffic and its users' feedback.

    Keeps the chat answers users rated positive, and the corrections they sent (POST /v1/feedback with
    "correction") in place of the answers they corrected, from requests logged with their content
    (the deployment must run with --log-requests). Personal data is replaced by placeholders such as
    [EMAIL]; requests that duplicate the served models' training data or each other, or that overlap
    an evaluation set, are left out. Every request left out is counted by reason, and the version's
    lineage records the deployment, model versions, time range and request ids.
    Exit code 1, and no version, when nothing is usable. Example:

        oikyo data from-traffic support --since 7d --feedback corrected
    """
    from oikyo.data import traffic

    try:
        version, report = traffic.from_traffic(deployment, since=since, feedback=feedback or None, name=name)
    except traffic.NothingUsable as nothing:
        if as_json:
            out.print_json(data={"ok": False, "error": str(nothing), "report": nothing.report})
        else:
            err.print(f"[bold red]Nothing usable.[/] {nothing}")
        raise typer.Exit(1)
    if as_json:
        from oikyo.data import versions

        out.print_json(data={"ok": True, "existed": report["existed"], "version": versions.describe(version),
                             "report": report})
        return
    kept = ", ".join(f"{n} {kind}" for kind, n in report["kept"].items())
    verb = "Already stored as" if report["existed"] else "Stored"
    out.print(f"{verb} dataset [bold]{version.name}@{version.id}[/]: {version.rows} rows ({kept}) "
              f"from {report['requests']} request(s) of deployment {deployment}")
    left_out = ", ".join(f"{n} {reason}" for reason, n in report["dropped"].items() if n) or "none"
    out.print(f"Left out: {left_out}")
    pii = ", ".join(f"{n} {kind}" for kind, n in report["pii_replaced"].items() if n) or "none found"
    out.print(f"Personal data replaced: {pii}")
    out.print(f"Checked against training data of: {', '.join(report['model_versions']) or 'no model version'}"
              f"; evaluation sets: {', '.join(report['eval_sets']) or 'none'}")
    for note in report["notes"]:
        err.print(f"[yellow]Note:[/] {note}")
