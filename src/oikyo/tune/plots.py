"""PNG plots of a study for ``oikyo tune show --plots DIR``: history, importances, parallel
coordinates and, with two objectives, the Pareto front.

Usage::

    from oikyo.tune import plots
    out = plots.write_plots(study, "plots/")
    # {"history": {"path": "plots/history.png"},
    #  "pareto_front": {"skipped": "the study has one objective"}, ...}

Every plot is either written (``{"path": ...}``) or skipped with the reason (``{"skipped": ...}``),
so a young study with one trial answers calmly instead of raising. Optuna's matplotlib plots draw
history, parallel coordinates and the Pareto front (they are marked experimental; the warning is
silenced here, and a plain matplotlib drawing takes over if one of them fails). The importance bars
are drawn from :func:`oikyo.tune.results.importances` itself, so the picture shows exactly the
numbers the text report prints. Parallel coordinates cover only params that varied; Optuna puts
log-scaled params (``FloatDistribution(log=True)``) on a log axis.

matplotlib is imported inside the functions with the non-interactive Agg backend, so the CLI
stays fast and works on machines without a display.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

from oikyo.tune import results

PLOT_DPI = 110


@contextlib.contextmanager
def _pyplot():
    """pyplot on Agg, with Optuna's ExperimentalWarning silenced, every figure closed after."""
    import matplotlib

    # Choose Agg only when nobody has chosen a backend yet: a notebook keeps its own.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            yield plt
        finally:
            plt.close("all")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "objective"


def _save(ax_or_fig, path: Path) -> dict[str, str]:
    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    if hasattr(ax_or_fig, "flat"):  # Optuna answers an array of axes for some plots
        fig = ax_or_fig.flat[0].figure
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    return {"path": str(path)}


def _target(i: int) -> Callable:
    return lambda t: t.values[i]


def _history(study, plt, path: Path, i: int, name: str) -> dict[str, str]:
    import optuna.visualization.matplotlib as vm

    multi = len(study.directions) > 1
    try:
        ax = vm.plot_optimization_history(study, target=_target(i) if multi else None, target_name=name)
        return _save(ax, path)
    except Exception:  # noqa: BLE001 - an experimental plot failing must not cost the history
        plt.close("all")
    rows = [r for r in results.history(study) if r["state"] == "complete"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["number"] for r in rows], [r["values"][i] for r in rows], "o", label=name)
    if not multi:
        ax.step([r["number"] for r in rows], [r["best_so_far"] for r in rows], where="post", label="best so far")
    ax.set(xlabel="trial", ylabel=name, title=f"Optimization history: {name}")
    ax.legend()
    return _save(fig, path)


def _importance_bars(entries: list[dict[str, Any]], plt, path: Path) -> dict[str, str]:
    drawn = [e for e in entries if e["params"]]
    fig, axes = plt.subplots(1, len(drawn), figsize=(5 * len(drawn), 0.5 * max(len(e["params"]) for e in drawn) + 1.5))
    for ax, entry in zip(list(getattr(axes, "flat", [axes])), drawn):
        names = list(entry["params"])[::-1]  # largest at the top
        ax.barh(names, [entry["params"][n] for n in names])
        few = f" (few trials: n={entry['n_complete']})" if entry["few_trials"] else f" (n={entry['n_complete']})"
        ax.set(xlabel="share of variance (fANOVA)", title=f"{entry['objective']}{few}", xlim=(0, 1))
    return _save(fig, path)


def _pareto(study, plt, path: Path, names: list[str]) -> dict[str, str]:
    import optuna.visualization.matplotlib as vm

    try:
        return _save(vm.plot_pareto_front(study, target_names=names), path)
    except Exception:  # noqa: BLE001 - fall back to a plain scatter of the same points
        plt.close("all")
    complete = results.complete_trials(study)
    on_front = {t.number for t in study.best_trials}
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, group in (("dominated", False), ("Pareto front", True)):
        pts = [t.values for t in complete if (t.number in on_front) == group]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label)
    ax.set(xlabel=names[0], ylabel=names[1], title="Pareto front")
    ax.legend()
    return _save(fig, path)


def _plan(study, objectives: list[str] | None) -> list[tuple[str, str | None, Callable | None]]:
    """Each plot's name, the reason it cannot be drawn yet (None: drawable) and how to draw it."""
    names = results.objective_names(study, objectives)
    complete = results.complete_trials(study)
    varying = results.varying_params(complete)
    multi = len(names) > 1
    plan: list[tuple[str, str | None, Callable | None]] = []
    for i, name in enumerate(names):
        suffix = f"-{_slug(name)}" if multi else ""
        why = None if complete else "no trial has completed yet"
        plan.append((f"history{suffix}", why, lambda plt, p, i=i, n=name: _history(study, plt, p, i, n)))
    entries = results.all_importances(study, objectives=names)
    why = None if any(e["params"] for e in entries) else "; ".join(f"{e['objective']}: {e['reason']}" for e in entries)
    plan.append(("importances", why, lambda plt, p: _importance_bars(entries, plt, p)))
    for i, name in enumerate(names):
        suffix = f"-{_slug(name)}" if multi else ""
        why = None
        if len(complete) < 2:
            why = f"needs 2 complete trials, has {len(complete)}"
        elif not varying:
            why = "no parameter took more than one value"

        def draw(plt, p, i=i, n=name):
            import optuna.visualization.matplotlib as vm

            return _save(vm.plot_parallel_coordinate(study, varying, target=_target(i), target_name=n), p)

        plan.append((f"parallel_coordinates{suffix}", why, draw))
    why = None
    if len(names) != 2:
        why = ("the study has one objective" if len(names) == 1
               else f"drawn for 2 objectives, the study has {len(names)}")
    elif not complete:
        why = "no trial has completed yet"
    plan.append(("pareto_front", why, lambda plt, p: _pareto(study, plt, p, names)))
    return plan


def write_plots(study, out_dir: str | Path, *, objectives: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Draw every plot the study allows into ``out_dir`` (created if missing) as ``<name>.png``.

    Answers ``{name: {"path": str}}`` for each file written and ``{name: {"skipped": reason}}`` for
    each plot that cannot be drawn yet. Names: ``history``, ``importances``,
    ``parallel_coordinates``, ``pareto_front``; with several objectives, history and parallel
    coordinates come once per objective as ``history-<objective>``. ``objectives`` names the
    objectives as in :func:`oikyo.tune.results.objective_names`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    answer: dict[str, dict[str, str]] = {}
    with _pyplot() as plt:
        for name, why, draw in _plan(study, objectives):
            if why is not None:
                answer[name] = {"skipped": why}
                continue
            try:
                answer[name] = draw(plt, out / f"{name}.png")
            except Exception as exc:  # noqa: BLE001 - one plot failing must not cost the others
                answer[name] = {"skipped": f"drawing failed: {type(exc).__name__}: {exc}"}
            finally:
                plt.close("all")
    return answer
