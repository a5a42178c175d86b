"""What a study found: the best trial or the Pareto front, importances, history, text and plots.

Pure functions over an ``optuna.Study`` (however it was loaded: in memory, SQLite, PostgreSQL), so
``oikyo tune show``, the REST API and a notebook read a study the same way. Every function answers
with plain JSON-ready values; nothing here runs a trial or writes to the study.

Usage::

    from oikyo.tune import results, study as studies
    record = studies.get("lr-sweep")
    ostudy, names = studies.load_optuna(record), record.objectives
    runs = {t["number"]: t["run_ids"] for t in studies.trials(record)}
    summary = results.summarize(ostudy, objectives=names, run_ids=runs)  # directions, names, counts
                                                  # by state, best trial or Pareto front, incomplete
    imp = results.all_importances(ostudy, objectives=names)  # one per objective (fANOVA, seeded)
    one = results.importances(ostudy, target_index=0)
    rows = results.history(ostudy)               # one row per trial: state, value(s), best so far
    plots = results.write_plots(ostudy, "out/", objectives=names)  # {name: {"path"} or {"skipped"}}
    print("\\n".join(results.format_lines(summary, imp)))

Honesty rules the output follows:

- Only COMPLETE trials count for the best trial, the Pareto front and importances. A pruned trial
  may carry a value (Optuna stores its last intermediate value), but it was stopped early, so it
  is listed with its state, last step and reason (user attr ``reason``), never ranked.
- Ties at the best value are named, and the lowest trial number is shown, so the answer does not
  depend on the storage's row order.
- Importances on fewer than :data:`FEW_TRIALS` complete trials are marked ``few_trials`` with the
  count: fANOVA's forest fits noise at that size.

Objective names: the ``objectives=`` argument (the CLI passes the study record's list), else
``study.user_attrs["objectives"]`` (e.g. ``["json_field_accuracy", "forgetting"]``), else ``value``
or ``value 0``, ``value 1``... Training run ids live in oikyo's runs table, not in Optuna, so a
caller that wants them in the rows passes ``run_ids={trial_number: [run ids]}`` to :func:`summarize`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# User attributes copied into a trial's row when present, as the driver writes them: per-fold
# results and their standard deviation under cross-validation, why a trial stopped, and the trial whose
# result a repeated configuration took (not trained again).
ROW_ATTRS = ("run_ids", "fold_results", "std", "reason", "duplicate_of")
# Below this many complete trials an importance is shown but marked as a rough guide.
FEW_TRIALS = 10
# fANOVA's forest is random; a fixed seed makes `tune show`, its plot and the API agree.
IMPORTANCE_SEED = 0
STATES = ("complete", "pruned", "failed", "running", "waiting")


def objective_names(study, objectives: list[str] | None = None) -> list[str]:
    """The objectives' names: ``objectives`` when given, else the study's ``objectives`` user attr,
    else ``value`` / ``value i``. A list of the wrong length is ignored rather than trusted."""
    n = len(study.directions)
    for names in (objectives, study.user_attrs.get("objectives")):
        if isinstance(names, (list, tuple)) and len(names) == n and all(isinstance(x, str) for x in names):
            return list(names)
    return ["value"] if n == 1 else [f"value {i}" for i in range(n)]


def directions(study) -> list[str]:
    """``"minimize"`` or ``"maximize"`` per objective, in the study's order."""
    return [d.name.lower() for d in study.directions]


def state_name(trial) -> str:
    """A trial's state in the words used everywhere here (``fail`` reads ``failed``)."""
    name = trial.state.name.lower()
    return "failed" if name == "fail" else name


def complete_trials(study) -> list:
    """The study's COMPLETE trials (the only ones ranked), in trial order."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def _row(trial, attrs=ROW_ATTRS, run_ids=None) -> dict[str, Any]:
    row: dict[str, Any] = {"number": trial.number, "values": list(trial.values), "params": dict(trial.params)}
    row.update({key: trial.user_attrs[key] for key in attrs if key in trial.user_attrs})
    if run_ids and run_ids.get(trial.number):
        row["run_ids"] = list(run_ids[trial.number])
    return row


def _incomplete(trials, run_ids=None) -> list[dict[str, Any]]:
    """Pruned, failed and unfinished trials with what is known about why they stopped."""
    rows = []
    for t in trials:
        state = state_name(t)
        if state == "complete":
            continue
        row: dict[str, Any] = {"number": t.number, "state": state, "params": dict(t.params)}
        if t.last_step is not None:
            row["last_step"] = t.last_step
            row["last_value"] = t.intermediate_values[t.last_step]
        if "reason" in t.user_attrs:
            row["reason"] = t.user_attrs["reason"]
        if t.user_attrs.get("skipped"):
            row["skipped"] = True  # drawn but never trained: it did not fit the budget left (oikyo.tune.budget)
        if run_ids and run_ids.get(t.number):
            row["run_ids"] = list(run_ids[t.number])
        rows.append(row)
    return rows


def _best_single(complete, direction: str, notes: list[str]) -> dict[str, Any] | None:
    pick = min if direction == "minimize" else max
    best_value = pick(t.values[0] for t in complete)
    ties = sorted(t.number for t in complete if t.values[0] == best_value)
    if len(ties) > 1:
        notes.append(
            f"trials {', '.join(f'#{n}' for n in ties)} tie at the best value {best_value:.6g}; "
            f"showing #{ties[0]}, the first"
        )
    return next(t for t in complete if t.number == ties[0])


def _front(study, dirs: list[str], notes: list[str]) -> list:
    """``study.best_trials`` ordered best-first by the first objective, then the others."""
    sign = [1 if d == "minimize" else -1 for d in dirs]
    front = sorted(study.best_trials, key=lambda t: ([s * v for s, v in zip(sign, t.values)], t.number))
    seen: dict[tuple, list[int]] = {}
    for t in front:
        seen.setdefault(tuple(t.values), []).append(t.number)
    for values, numbers in seen.items():
        if len(numbers) > 1:
            notes.append(
                f"trials {', '.join(f'#{n}' for n in numbers)} reached the same values "
                f"({', '.join(f'{v:.6g}' for v in values)}); all are on the front"
            )
    return front


def summarize(study, *, objectives: list[str] | None = None, run_ids: dict[int, list[str]] | None = None,
              attrs=ROW_ATTRS) -> dict[str, Any]:
    """The study at a glance, as a JSON-ready dict.

    Keys: ``study``, ``directions``, ``objectives``, ``counts`` (by state, plus ``total``),
    ``best`` (single objective: one row, or None), ``pareto_front`` (multi-objective: rows sorted
    best-first by the first objective, or None), ``incomplete`` (pruned, failed and running trials
    with ``last_step``/``last_value``/``reason`` when known) and ``notes`` (ties, nothing complete).
    A row is ``{number, values, params}`` plus the user attrs named in ``attrs`` that it carries,
    and ``run_ids`` from the ``run_ids`` mapping (trial number to run ids) when given.
    """
    trials = study.get_trials(deepcopy=False)
    dirs, names = directions(study), objective_names(study, objectives)
    counts = {state: 0 for state in STATES}
    for t in trials:
        counts[state_name(t)] = counts.get(state_name(t), 0) + 1
    counts["total"] = len(trials)
    complete = [t for t in trials if state_name(t) == "complete"]
    notes: list[str] = []
    best = front = None
    if not complete:
        others = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
        notes.append(f"no trial has completed yet ({others or 'no trials'}): nothing to rank")
    elif len(dirs) == 1:
        best = _row(_best_single(complete, dirs[0], notes), attrs, run_ids)
    else:
        front = [_row(t, attrs, run_ids) for t in _front(study, dirs, notes)]
    return {
        "study": study.study_name,
        "directions": dirs,
        "objectives": names,
        "counts": counts,
        "best": best,
        "pareto_front": front,
        "incomplete": _incomplete(trials, run_ids),
        "notes": notes,
    }


def varying_params(complete) -> list[str]:
    """Params that every complete trial has and that took more than one value among them."""
    if not complete:
        return []
    common = set(complete[0].params).intersection(*(t.params for t in complete[1:]))
    return sorted(p for p in common if len({repr(t.params[p]) for t in complete}) > 1)


def importances(study, target_index: int = 0, *, objectives: list[str] | None = None) -> dict[str, Any]:
    """How much each varying param explains objective ``target_index`` (fANOVA, shares sum to 1).

    Answers ``{objective, index, n_complete, few_trials, params, reason}``: ``params`` is
    ``{param: share}`` largest first, or None with ``reason`` saying why (fewer than 2 complete
    trials, no param that varied, an objective that never changed).
    """
    import optuna

    names = objective_names(study, objectives)
    if not 0 <= target_index < len(names):
        from oikyo.errors import OikyoError

        raise OikyoError(f"objective index {target_index} is out of range: the study has {names}")
    complete = [t for t in complete_trials(study) if math.isfinite(t.values[target_index])]
    out: dict[str, Any] = {
        "objective": names[target_index],
        "index": target_index,
        "n_complete": len(complete),
        "few_trials": len(complete) < FEW_TRIALS,
        "params": None,
        "reason": None,
    }
    varying = varying_params(complete)
    if len(complete) < 2:
        out["reason"] = f"needs 2 complete trials with a finite value, has {len(complete)}"
    elif not varying:
        out["reason"] = f"no parameter took more than one value across the {len(complete)} complete trials"
    elif len({t.values[target_index] for t in complete}) == 1:
        out["reason"] = f"{names[target_index]} was the same in every complete trial"
    if out["reason"]:
        return out
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    shares = optuna.importance.get_param_importances(
        study, evaluator=evaluator, params=varying, target=lambda t: t.values[target_index]
    )
    out["params"] = {p: float(v) for p, v in sorted(shares.items(), key=lambda kv: -kv[1])}
    return out


def all_importances(study, *, objectives: list[str] | None = None) -> list[dict[str, Any]]:
    """:func:`importances` for every objective, in the study's order."""
    return [importances(study, i, objectives=objectives) for i in range(len(study.directions))]


def history(study) -> list[dict[str, Any]]:
    """One row per trial in trial order, for an optimization-history table.

    Row: ``number``, ``state``, ``values`` (None when the trial has none), ``best_so_far`` (single
    objective: the best COMPLETE value up to and including this trial, None before the first),
    ``duration_s`` (when finished), ``last_step`` and ``reason`` when known.
    """
    dirs = directions(study)
    pick = min if dirs[0] == "minimize" else max
    best: float | None = None
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        state = state_name(t)
        row: dict[str, Any] = {"number": t.number, "state": state, "values": list(t.values) if t.values else None}
        if len(dirs) == 1:
            if state == "complete":
                best = t.values[0] if best is None else pick(best, t.values[0])
            row["best_so_far"] = best
        if t.datetime_start and t.datetime_complete:
            row["duration_s"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        if t.last_step is not None:
            row["last_step"] = t.last_step
        if "reason" in t.user_attrs:
            row["reason"] = t.user_attrs["reason"]
        rows.append(row)
    return rows


def write_plots(study, out_dir: str | Path, *, objectives: list[str] | None = None) -> dict[str, dict[str, str]]:
    """PNG plots of the study in ``out_dir``; see :func:`oikyo.tune.plots.write_plots`."""
    from oikyo.tune import plots

    return plots.write_plots(study, out_dir, objectives=objectives)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(params.items())) or "(no params)"


def _row_lines(row: dict[str, Any], names: list[str], indent: str) -> list[str]:
    values = "  ".join(f"{n}={_num(v)}" for n, v in zip(names, row["values"]))
    lines = [f"{indent}#{row['number']}  {values}", f"{indent}  params: {_params_text(row['params'])}"]
    if row.get("duplicate_of") is not None:
        lines.append(f"{indent}  the same configuration as #{row['duplicate_of']}: its result, not trained again")
    if row.get("run_ids"):
        lines.append(f"{indent}  runs: {', '.join(map(str, row['run_ids']))}")
    std = row.get("std")
    if isinstance(std, dict) and std:
        folds = len(row.get("fold_results") or []) or "the"
        shown = "  ".join(f"{n}={_num(std[n])}" for n in names if n in std)
        lines.append(f"{indent}  std across {folds} folds: {shown}")
    return lines


def _incomplete_lines(summary: dict[str, Any]) -> list[str]:
    name = summary["objectives"][0]
    lines = []
    skipped = [row["number"] for row in summary["incomplete"] if row.get("skipped")]
    if skipped:  # one line, not one per draw: a budgeted study may skip many
        lines.append(f"  {len(skipped)} failed {'trial was' if len(skipped) == 1 else 'trials were'} skipped, never "
                     f"trained: their estimated cost did not fit what the budget had left "
                     f"(#{', #'.join(str(n) for n in skipped)})")
    for row in summary["incomplete"]:
        if row.get("skipped"):
            continue
        text = f"  #{row['number']} {row['state']}"
        if "last_step" in row:
            text += f" at step {row['last_step']}"
            if len(summary["objectives"]) == 1:
                text += f" ({name} {_num(row['last_value'])})"
        if row.get("reason"):
            text += f": {row['reason']}"
        lines.append(text)
    return lines


def _importance_lines(entry: dict[str, Any]) -> list[str]:
    head = f"Importances for {entry['objective']} (fANOVA on {entry['n_complete']} complete trials"
    if entry["params"] is None:
        return [f"{head}): not computed: {entry['reason']}"]
    caution = f"; few trials (n={entry['n_complete']}), a rough guide" if entry["few_trials"] else ""
    width = max(len(p) for p in entry["params"])
    return [f"{head}{caution}):"] + [f"  {p:<{width}}  {share:.2f}" for p, share in entry["params"].items()]


def format_lines(summary: dict[str, Any], imp: dict | list[dict] | None = None) -> list[str]:
    """The plain-text report ``oikyo tune show`` prints (no Rich markup), one string per line.

    ``imp`` is one :func:`importances` answer, a list of them (one per objective), or None.
    """
    names, counts = summary["objectives"], summary["counts"]
    shown = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s) or s in ("complete", "pruned", "failed"))
    goals = ", ".join(f"{d} {n}" for d, n in zip(summary["directions"], names))
    lines = [f"Study {summary['study']}: {counts['total']} trials ({shown})", f"Objective: {goals}"]
    if summary["best"] is not None:
        lines.append("Best trial:")
        lines += _row_lines(summary["best"], names, "  ")
    if summary["pareto_front"] is not None:
        lines.append(f"Pareto front: {len(summary['pareto_front'])} trials, best {names[0]} first")
        for row in summary["pareto_front"]:
            lines += _row_lines(row, names, "  ")
    lines += [f"Note: {note}" for note in summary["notes"]]
    incomplete = _incomplete_lines(summary)
    if incomplete:
        lines.append("Not complete (never ranked):")
        lines += incomplete
    for entry in [imp] if isinstance(imp, dict) else (imp or []):
        lines += _importance_lines(entry)
    return lines
