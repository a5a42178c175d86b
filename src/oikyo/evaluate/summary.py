"""Side-by-side results of an evaluation group, and the in-process "fine-tuned vs base" used by quickstart.

    table = side_by_side(evaluations)        # {"systems": [...], "metrics": {name: [value per system]}, ...}
    result = evaluate_against_base("mv-1a2b", "3f9c0a1b2c3d", split="test", limit=60, log=print)

:func:`evaluate_against_base` runs in the calling process (no job, no worker): the fine-tuned model
and its base model on the same examples, stored as evaluations like any other, printed side by side
with the paired bootstrap CI of every difference, and the forgetting probe when asked for.
"""

from __future__ import annotations

import math
from typing import Callable

from oikyo.evaluate import compare, records
from oikyo.evaluate.forgetting import describe_change, describe_degeneration, example_lines
from oikyo.store.models import Evaluation

Log = Callable[[str], None]


def side_by_side(group: list[Evaluation], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Metric values of every system of a group, and the model's paired deltas against each baseline."""
    model = next((e for e in group if e.role == "model"), group[0])
    others = [e for e in group if e is not model]
    names = list(model.metrics) + [m for e in others for m in e.metrics if m not in model.metrics]
    names = list(dict.fromkeys(names))
    deltas = compare.group_deltas(model, others, resamples=resamples, seed=seed) if others else {}
    return {
        "systems": [{"role": e.role, "name": records.system_name(e), "evaluation": e.id,
                     "forced_overlap": e.forced_overlap} for e in [model, *others]],
        "metrics": {name: [e.metrics.get(name) for e in [model, *others]] for name in names},
        "deltas": deltas, "forgetting": model.forgetting, "dataset_version_id": model.dataset_version_id,
        "split": model.split, "rows": model.rows, "forced_overlap": model.forced_overlap,
    }


def _fmt(value) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def format_lines(table: dict) -> list[str]:
    """The side-by-side table as plain text lines (for logs and quickstart)."""
    names = [s["name"] + (" [forced overlap]" if s["forced_overlap"] else "") for s in table["systems"]]
    width = max(len(m) for m in table["metrics"]) if table["metrics"] else 6
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>24}" for n in names) + "  gain over base (95% CI)"]
    base = table["deltas"].get("base", {})
    for metric, values in table["metrics"].items():
        row = f"{metric:<{width}}  " + "  ".join(f"{_fmt(v):>24}" for v in values)
        d = base.get(metric)
        if d:
            mark = "*" if d["significant"] else " "
            row += f"  {d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{mark}"
        lines.append(row)
    lines.append("* the confidence interval excludes 0 (paired bootstrap)")
    forgetting = table.get("forgetting")
    if forgetting:
        flag = "FLAGGED" if forgetting["flagged"] else "ok"
        lines.append(f"forgetting {forgetting['forgetting']:+.3f} ({flag}, threshold {forgetting['threshold']:g}): "
                     f"probe accuracy {forgetting['base']['accuracy']:.3f} -> {forgetting['model']['accuracy']:.3f} "
                     f"({describe_change(forgetting)}), perplexity ratio {forgetting['perplexity_ratio']:.3f}"
                     + (f", {describe_degeneration(forgetting)}" if describe_degeneration(forgetting) else ""))
        examples = example_lines(forgetting)
        if examples:
            lines.append("degenerate answers of the model (first few):")
            lines += examples
    return lines


def evaluate_against_base(model_version_id: str, dataset_version_id: str, split: str = "test", limit: int | None = None,
                          log: Log = print, *, probe: bool = False, few_shot: bool = False,
                          max_new_tokens: int | None = None, force: bool = False) -> dict:
    """Evaluate a fine-tuned model version and its base model in this process; print and return the comparison.

    Returns ``{"evaluations": {role: id}, "metrics": {name: {role: value}}, "gain": {name: {delta, low, high,
    significant}}, "forgetting": {...} | None, "table": [lines]}``.
    """
    from oikyo.evaluate.runner import EvalSpec, prepare, run_evaluation

    spec = EvalSpec(model=model_version_id, dataset=dataset_version_id, split=split, limit=limit, baselines=True,
                    few_shot_k=3 if few_shot else 0, probe=probe, max_new_tokens=max_new_tokens, force=force)
    prepared = prepare(spec)
    log(f"Evaluating {prepared.target.label} and its base model {prepared.target.base_model} on "
        f"{len(prepared.examples)} examples of {prepared.dataset_name}@{prepared.dataset_id}:{prepared.split} "
        f"(greedy, up to {prepared.settings.max_new_tokens} new tokens)")
    found = run_evaluation(prepared, log=log)
    records.save(found)
    table = side_by_side(found)
    lines = format_lines(table)
    for line in lines:
        log(line)
    return {
        "evaluations": {e.role: e.id for e in found},
        "metrics": {name: {s["role"]: v for s, v in zip(table["systems"], values)}
                    for name, values in table["metrics"].items()},
        "gain": {name: {k: d[k] for k in ("delta", "low", "high", "significant")}
                 for name, d in table["deltas"].get("base", {}).items()},
        "forgetting": table["forgetting"], "table": lines,
    }
