"""Print a dataset quality report (see :mod:`oikyo.data.quality`) as rich tables in a terminal.

    render_report(report, Console())

Sections: the unit of every length and why, a summary of lengths per role, a power-of-two length
histogram drawn with bars (one column per role), then duplicates, answers and turns, labels,
personal data, leakage, and the warnings in yellow. Everything fits a 100-column terminal; text
taken from the data (labels, redacted matches) is printed literally, never read as rich markup.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_BAR = "█"


def render_report(report: dict, console: Console) -> None:
    """Print ``report`` to ``console``: summary, histogram, finding tables and warnings."""
    unit = report.get("token_unit", "tokens")
    console.rule(f"[bold]Dataset quality: {report['rows']:,} {report['kind']} rows")
    if report["rows"]:
        console.print(_unit_line(report, unit))
        console.print(_summary_table(report, unit))
        console.print(_histogram_table(report, unit, console.width))
        console.print(_duplicates_table(report))
        console.print(_answers_table(report))
        if report.get("labels"):
            console.print(_labels_table(report["labels"]))
        console.print(_pii_table(report["pii"]))
        leakage = _leakage_table(report["leakage"])
        if leakage is not None:
            console.print(leakage)
    _print_warnings(report["warnings"], console)


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _unit_line(report: dict, unit: str) -> Text:
    """Which unit the lengths are in, and why (a tokenizer, or text written without spaces)."""
    # Reports stored before the reason existed carry only the unit.
    reason = report.get("token_unit_reason") or ("" if report.get("tokenizer") else "no tokenizer given")
    return Text(f"Lengths are in {unit}" + (f": {reason}." if reason else "."), style="dim")


def _summary_table(report: dict, unit: str) -> Table:
    table = Table(title=f"Lengths in {unit}", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("series")
    for name in ("examples", "total", "mean", "median", "p95", "max"):
        table.add_column(name, justify="right")
    lengths = report["lengths"]
    series = [("whole example", lengths["example"])] + list(lengths["by_role"].items())
    for name, s in series:
        table.add_row(Text(name), f"{s['count']:,}", f"{s['total']:,}", _fmt(s["mean"]), _fmt(s["median"]),
                      _fmt(s["p95"]), f"{s['max']:,}")
    return table


def _histogram_table(report: dict, unit: str, width: int) -> Table:
    hist = report["histograms"]
    series = [("example", hist["example"])] + list(hist["by_role"].items())
    used = [i for i in range(len(hist["bins"])) if any(counts[i] for _, counts in series)]
    lo, hi = (used[0], used[-1]) if used else (0, 0)
    # Share the width left after the bin column between the series; a bar leaves room for its count.
    column = max(10, (min(width, 100) - 14) // len(series))
    bar_width = max(3, min(20, column - 9))
    table = Table(title=f"Histogram of {unit} per example (whole example and per role)",
                  box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column(unit, justify="right", no_wrap=True)
    for name, _ in series:
        table.add_column(Text(name), no_wrap=True, overflow="crop")
    peaks = [max(counts) or 1 for _, counts in series]
    for i in range(lo, hi + 1):
        cells = []
        for (_, counts), peak in zip(series, peaks):
            n = counts[i]
            bar = _BAR * max(1 if n else 0, round(bar_width * n / peak))
            cells.append(Text.assemble((bar, "cyan"), f" {n:,}" if n else ""))
        table.add_row(hist["bins"][i], *cells)
    return table


def _duplicates_table(report: dict) -> Table:
    table = Table(title="Duplicates", box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("check", "left"), ("rows", "right"), ("share", "right"), ("example pairs", "left")):
        table.add_column(name, justify=justify)
    exact, near = report["duplicates"]["exact"], report["duplicates"]["near"]
    table.add_row("exact (case and spacing ignored)", f"{exact['count']:,}", f"{exact['share']:.1%}",
                  ", ".join(f"{a}={b}" for a, b in exact["examples"]))
    table.add_row(f"near (Jaccard >= {near['threshold']})", f"{near['count']:,}", f"{near['share']:.1%}",
                  ", ".join(f"{a}~{b} ({s:.2f})" for a, b, s in near["examples"]))
    return table


def _answers_table(report: dict) -> Table:
    table = Table(title="Answers and turns", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("check")
    table.add_column("rows", justify="right")
    table.add_column("examples / detail")
    answers = report["answers"]
    for problem in ("empty", "short"):
        table.add_row(f"{problem} answers", f"{answers[problem]:,}",
                      ", ".join(map(str, answers["examples"][problem])))
    if report["kind"] == "preference":
        table.add_row("chosen = rejected", f"{answers['identical_pairs']:,}", "")
    turns = report.get("turns")
    if turns:
        table.add_row(turns["bad_ending_rule"], f"{turns['bad_ending']:,}",
                      ", ".join(map(str, turns["bad_ending_examples"])))
        if report["kind"] in ("conversations", "unpaired_preference"):
            table.add_row("no assistant turn", f"{turns['no_assistant']:,}", "")
        table.add_row("no user turn", f"{turns['no_user']:,}", "")
        table.add_row("with a system prompt", f"{turns['with_system']:,}",
                      f"{turns['distinct_system_prompts']:,} distinct")
        per_example = "  ".join(f"{k}: {v:,}" for k, v in list(turns["per_example"].items())[:8])
        more = " …" if len(turns["per_example"]) > 8 else ""
        table.add_row("turns per example", "", per_example + more)
        shares = "  ".join(f"{r} {s:.0%}" for r, s in turns["role_shares"].items())
        table.add_row("share of messages", "", Text(shares))
    return table


def _labels_table(labels: dict, shown: int = 15) -> Table:
    table = Table(title=f"Labels ({labels['classes']} classes)", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("label")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for label, n in list(labels["counts"].items())[:shown]:
        table.add_row(Text(label), f"{n:,}", f"{labels['shares'][label]:.1%}")
    if labels["classes"] > shown:
        table.add_row(f"… {labels['classes'] - shown} more", "", "")
    return table


def _pii_table(pii: dict) -> Table:
    table = Table(title="Possible personal data and secrets (redacted)", box=box.SIMPLE_HEAD,
                  title_justify="left", min_width=50)
    for name, justify in (("type", "left"), ("matches", "right"), ("rows", "right"), ("examples", "left")):
        table.add_column(name, justify=justify)
    for kind, entry in pii["by_type"].items():
        examples = "  ".join(f"row {e['row']}: {e['match']}" for e in entry["examples"][:3])
        table.add_row(kind, f"{entry['matches']:,}", f"{entry['rows']:,}", Text(examples))
    return table


def _leakage_table(leakage: dict) -> Table | None:
    checks = [(f"{split} vs train", e, "row") for split, e in ((leakage["splits"] or {}).get("checked") or {}).items()]
    checks += [(f"eval {name!r} in dataset", e, "eval_row") for name, e in leakage["eval_sets"].items()]
    if not checks:
        return None
    table = Table(title=f"Leakage (exact, or >= {leakage['min_share']:.0%} of word {leakage['ngram']}-grams)",
                  box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("check")
    for name in ("rows", "exact", "n-gram", "leaked"):
        table.add_column(name, justify="right")
    table.add_column("examples")
    for name, e, key in checks:
        examples = ", ".join(f"{x[key]}" for x in e["examples"])
        table.add_row(Text(name), f"{e['rows']:,}", f"{e['exact']:,}", f"{e['ngram']:,}",
                      f"{e['leaked']:,} ({e['share']:.1%})", examples)
    return table


def _print_warnings(warnings: list[str], console: Console) -> None:
    if not warnings:
        console.print("[green]No warnings.[/green]")
        return
    console.print("[bold yellow]Warnings[/bold yellow]")
    for w in warnings:
        console.print(Text(f"! {w}", style="yellow"))
