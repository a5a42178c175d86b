"""One study's whole picture for people: the record, its trials, the best trial or Pareto front,
importances, history, promotions and plot files. ``oikyo tune show``, the REST routes and the
dashboard's Studies page all read a study through here, so they always agree.

Usage::

    from oikyo.tune import report
    info = report.study_report("lr-sweep")            # JSON-ready dict
    files = report.plots("lr-sweep")                    # {name: {"path"} | {"skipped": reason}}
    path = report.plot_file("lr-sweep", "history")      # one PNG (drawn again when trials changed)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.tune import results
from oikyo.tune import study as studies

_PLOT_NAME = re.compile(r"^[a-z0-9_.\-]{1,80}$")
# matplotlib is not thread-safe, and the server answers plot requests in a thread pool: one drawing at a time.
_draw_lock = threading.Lock()


def study_report(ref: str) -> dict:
    """Everything known about a study, JSON-ready (what `oikyo tune show --json` prints)."""
    from oikyo.tune import promote

    record = studies.get(ref)
    ostudy = studies.load_optuna(record)
    trials = studies.trials(record)
    run_ids = {t["number"]: t["run_ids"] for t in trials}
    summary = results.summarize(ostudy, objectives=record.objectives, run_ids=run_ids)
    summary["study"] = record.name
    return {
        "study": studies.describe(record, trials),
        "summary": summary,
        "importances": results.all_importances(ostudy, objectives=record.objectives),
        "history": results.history(ostudy),
        "trials": trials,
        "promotions": [promote.describe(p) for p in promote.promotions(record.id)],
        **_plot_lists(_locked_plots(record, trials, ostudy)),
    }


def _plot_lists(drawn: dict) -> dict:
    """``plots``: the names of the plots drawn (served as PNG); ``plots_skipped``: {name: why not yet}."""
    return {"plots": sorted(name for name, entry in drawn.items() if "path" in entry),
            "plots_skipped": {name: entry.get("skipped") for name, entry in sorted(drawn.items()) if "path" not in entry}}


def text_lines(info: dict) -> list[str]:
    """The plain text of a :func:`study_report` (what `oikyo tune show` prints)."""
    lines = results.format_lines(info["summary"], info["importances"])
    for promotion in info["promotions"]:
        model = promotion["test"].get("model") or {}
        base = promotion["test"].get("base") or {}
        scores = ", ".join(f"{k} {v:.4g}" for k, v in (model.get("metrics") or {}).items() if isinstance(v, float))
        base_scores = ", ".join(f"{k} {v:.4g}" for k, v in (base.get("metrics") or {}).items()
                                if isinstance(v, float))
        forgetting = (model.get("forgetting") or {}).get("forgetting")
        lines.append(f"Promoted trial {promotion['trial']} ({promotion['state']}): run {promotion['run_id'] or '-'}, "
                     f"model {promotion['model_version'] or '-'}")
        if scores:
            lines.append(f"  test split: {scores}" + (f"  (base: {base_scores})" if base_scores else "")
                         + (f", forgetting {forgetting:.3g}" if isinstance(forgetting, float) else ""))
    return lines


def _plot_dir(record) -> Path:
    return workspace.subdir("tune") / record.id / "plots"


def _fingerprint(trials: list[dict]) -> str:
    """Changes whenever a trial's state, values or reported steps change (plots are drawn again)."""
    seen = [(t["number"], t["state"], t["values"], len(t["intermediate"])) for t in trials]
    return hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plots(ref: str) -> dict[str, dict[str, str]]:
    """The study's plots as PNG files in the workspace, drawn when the trials changed since last time."""
    record = studies.get(ref)
    return _locked_plots(record, studies.trials(record), None)


def _locked_plots(record, trials: list[dict], ostudy) -> dict[str, dict[str, str]]:
    with _draw_lock:
        return _plots_of(record, trials, ostudy)


def _plots_of(record, trials: list[dict], ostudy) -> dict[str, dict[str, str]]:
    """``ostudy``: the Optuna study when the caller loaded it (None: loaded here if drawing is needed)."""
    folder = _plot_dir(record)
    stamp = _fingerprint(trials)
    index = folder / "index.json"
    if index.is_file():
        saved = json.loads(index.read_text())
        if saved.get("fingerprint") == stamp and all(Path(v["path"]).is_file()
                                                      for v in saved["plots"].values() if "path" in v):
            return saved["plots"]
    folder.mkdir(parents=True, exist_ok=True)
    drawn = results.write_plots(ostudy or studies.load_optuna(record), folder, objectives=record.objectives)
    tmp = folder / "index.json.tmp"
    tmp.write_text(json.dumps({"fingerprint": stamp, "plots": drawn}))
    tmp.replace(index)
    return drawn


def plot_file(ref: str, name: str) -> Path:
    """One plot's PNG path; OikyoError naming the plots there are when ``name`` is not one of them."""
    if not _PLOT_NAME.match(name):
        raise OikyoError(f"not a plot name: {name[:80]!r}")
    drawn = plots(ref)
    entry = drawn.get(name)
    if entry is None:
        raise OikyoError(f"no such plot {name!r} for this study; there are: {', '.join(sorted(drawn)) or 'none yet'}")
    if "path" not in entry:
        raise OikyoError(f"plot {name!r} is not drawn yet: {entry.get('skipped')}")
    return Path(entry["path"])
