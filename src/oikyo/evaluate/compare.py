"""Compare two systems on the same examples: metric deltas with paired bootstrap CIs, differing examples, config diff.

A and B may each be an evaluation id, a model version, a training run, or a base model name. For
anything but an evaluation id, the newest evaluation of that model is used, on a dataset version and
split both have been evaluated on (``dataset``/``split`` narrow the choice)::

    report = compare("mv-1a2b", "smollm2-135m-instruct", resamples=2000, seed=0)
    report["metrics"]["exact_match"]   # {"a", "b", "delta", "low", "high", "significant", "verdict", ...}
    report["examples"]                 # where the two differ most, side by side
    report["config_diff"]              # {"train.lr": [0.0002, 0.001], ...} flattened training configs

Examples are paired by content hash, so two evaluations of the same split line up even when one
used ``--limit``. The delta is always A - B; ``verdict`` says which is better given the metric's
direction, or that the difference is not significant (the CI contains 0).
"""

from __future__ import annotations

import math

import numpy as np

from oikyo.errors import OikyoError
from oikyo.evaluate import metrics as registry
from oikyo.evaluate import records
from oikyo.evaluate.bootstrap import DEFAULT_RESAMPLES, paired_bootstrap, resample_counts
from oikyo.store.models import Evaluation


def flatten_config(config: dict | None, prefix: str = "") -> dict:
    """Nested dicts as dotted keys: ``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}``."""
    flat: dict = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(a: dict | None, b: dict | None) -> dict[str, list]:
    """Keys whose values differ between two flattened configs: ``{key: [a_value, b_value]}`` (None: absent)."""
    fa, fb = flatten_config(a), flatten_config(b)
    return {key: [fa.get(key), fb.get(key)] for key in sorted(set(fa) | set(fb)) if fa.get(key) != fb.get(key)}


def _identity(ev: Evaluation) -> str:
    return records.system_name(ev)


def _candidates(ref: str) -> tuple[list[Evaluation], str]:
    """Evaluations of the model ``ref`` names (newest first) and a label for messages."""
    from oikyo.evaluate.targets import resolve_target

    if ref.strip().startswith("ev-"):
        ev = records.get(ref)
        return [ev], ev.id
    target = resolve_target(ref)
    if target.is_base:
        found = [e for e in records.list_evaluations(base_model=target.base_model, limit=None)
                 if e.model_version_id is None and e.role != "few_shot"]
    else:
        found = records.list_evaluations(model_version_id=target.model_version_id, role="model", limit=None)
    if not found:
        raise OikyoError(f"{target.label} has no evaluations yet; run `oikyo eval {ref}` first")
    return found, target.label


def resolve_pair(a: str, b: str, dataset: str | None = None, split: str | None = None) -> tuple[Evaluation, Evaluation]:
    """The two evaluations to compare: the newest ones of A and B on a dataset version and split they share."""
    found_a, label_a = _candidates(a)
    found_b, label_b = _candidates(b)
    if dataset is not None:
        from oikyo.data import versions

        version_id = versions.resolve(dataset).id
        found_a = [e for e in found_a if e.dataset_version_id == version_id]
        found_b = [e for e in found_b if e.dataset_version_id == version_id]
    if split is not None:
        found_a = [e for e in found_a if e.split == split]
        found_b = [e for e in found_b if e.split == split]
    shared_b = {(e.dataset_version_id, e.split): e for e in reversed(found_b)}  # newest wins
    for ev in found_a:
        match = shared_b.get((ev.dataset_version_id, ev.split))
        if match is not None and match.id != ev.id:
            return ev, match
    raise OikyoError(f"{label_a} and {label_b} have no evaluation on a common dataset version and split; "
                     "evaluate both on the same data (`oikyo eval MODEL --dataset VERSION:split`)")


def _paired_rows(ev_a: Evaluation, ev_b: Evaluation) -> tuple[list[dict], list[dict]]:
    rows_a, rows_b = records.read_examples(ev_a), records.read_examples(ev_b)
    by_key_b = {row["key"]: row for row in rows_b}
    pairs = [(row, by_key_b[row["key"]]) for row in rows_a if row["key"] in by_key_b]
    if not pairs:
        raise OikyoError(f"{ev_a.id} and {ev_b.id} share no examples (different rows); nothing to compare")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _verdict(result, higher_is_better: bool, name_a: str, name_b: str) -> str:
    if not result.significant:
        return "no significant difference"
    a_better = (result.delta > 0) == higher_is_better
    return f"{name_a if a_better else name_b} is better"


def metric_deltas(rows_a: list[dict], rows_b: list[dict], names: list[str], *, resamples: int, seed: int,
                  confidence: float = 0.95, labels: tuple[str, str] = ("A", "B")) -> dict[str, dict]:
    """Paired bootstrap of every metric both sides have statistics for (one set of resamples for all)."""
    counts = resample_counts(len(rows_a), resamples, seed)
    out = {}
    for name in names:
        if not all(name in r["stats"] for r in rows_a) or not all(name in r["stats"] for r in rows_b):
            continue
        metric = registry.METRICS.get(name)
        aggregate = metric.aggregate if metric is not None else registry.mean_aggregate
        stats_a = np.asarray([r["stats"][name] for r in rows_a], dtype=np.float64)
        stats_b = np.asarray([r["stats"][name] for r in rows_b], dtype=np.float64)
        if stats_a.shape[1] != stats_b.shape[1]:
            continue  # e.g. macro-F1 over different label sets: not comparable row by row
        result = paired_bootstrap(stats_a, stats_b, aggregate, resamples=resamples, confidence=confidence,
                                  seed=seed, counts=counts)
        higher = metric.higher_is_better if metric is not None else True
        out[name] = {"a": result.value_a, "b": result.value_b, **result.to_dict(), "higher_is_better": higher,
                     "verdict": _verdict(result, higher, *labels)}
    return out


def differing_examples(rows_a: list[dict], rows_b: list[dict], metric: str | None, n: int) -> list[dict]:
    """The ``n`` examples whose per-example score differs most between A and B (then where the answers differ)."""
    scored = []
    for ra, rb in zip(rows_a, rows_b):
        sa, sb = (ra["scores"].get(metric), rb["scores"].get(metric)) if metric else (None, None)
        gap = abs(sa - sb) if isinstance(sa, (int, float)) and isinstance(sb, (int, float)) else 0.0
        differs = (ra.get("prediction") or "") != (rb.get("prediction") or "")
        scored.append((gap if not math.isnan(gap) else 0.0, differs, ra, rb, sa, sb))
    scored.sort(key=lambda item: (-item[0], not item[1], item[2]["index"]))
    return [{"index": ra["index"], "key": ra["key"], "question": ra["question"], "reference": ra["reference"],
             "a": ra.get("prediction"), "b": rb.get("prediction"), "score_a": sa, "score_b": sb, "metric": metric}
            for gap, differs, ra, rb, sa, sb in scored[:n] if gap > 0 or differs]


def _training_config(ev: Evaluation) -> dict:
    if ev.model_version_id:
        from oikyo.jobs import model_versions

        return (model_versions.get(ev.model_version_id).lineage or {}).get("config") or {}
    return {}


def compare(a: str, b: str, *, dataset: str | None = None, split: str | None = None,
            resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95, examples: int = 5) -> dict:
    """The full comparison report of A against B (see the module docstring)."""
    ev_a, ev_b = resolve_pair(a, b, dataset, split)
    rows_a, rows_b = _paired_rows(ev_a, ev_b)
    name_a, name_b = _identity(ev_a), _identity(ev_b)
    if name_a == name_b:
        name_a, name_b = f"{name_a} ({ev_a.id})", f"{name_b} ({ev_b.id})"
    names = [m for m in ev_a.metrics if m in ev_b.metrics]
    deltas = metric_deltas(rows_a, rows_b, names, resamples=resamples, seed=seed, confidence=confidence,
                           labels=(name_a, name_b))
    primary = records.primary_metric({m: d["a"] for m, d in deltas.items()})
    eval_diff = config_diff({"generation": ev_a.generation, "metric_versions": ev_a.metric_versions},
                            {"generation": ev_b.generation, "metric_versions": ev_b.metric_versions})
    return {
        "a": {**records.describe(ev_a), "name": name_a}, "b": {**records.describe(ev_b), "name": name_b},
        "dataset_version_id": ev_a.dataset_version_id, "split": ev_a.split, "paired_examples": len(rows_a),
        "resamples": resamples, "seed": seed, "confidence": confidence, "primary_metric": primary,
        "metrics": deltas, "examples": differing_examples(rows_a, rows_b, primary, examples),
        "config_diff": config_diff(_training_config(ev_a), _training_config(ev_b)), "evaluation_diff": eval_diff,
        "forced_overlap": {"a": ev_a.forced_overlap, "b": ev_b.forced_overlap},
    }


def group_deltas(model: Evaluation, others: list[Evaluation], *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> dict[str, dict]:
    """The model's metric deltas against each baseline of its group (``{role: {metric: delta}}``)."""
    out = {}
    for other in others:
        rows_a, rows_b = _paired_rows(model, other)
        names = [m for m in model.metrics if m in other.metrics]
        out[other.role] = metric_deltas(rows_a, rows_b, names, resamples=resamples, seed=seed,
                                        labels=(records.system_name(model), records.system_name(other)))
    return out
