"""Stored evaluations: ids, per-example artifacts, listing, lookup and the leaderboard.

The database row (:class:`oikyo.store.models.Evaluation`) holds ids, settings and metric values;
the per-example outputs (question, reference, prediction, score and sufficient statistics per
metric) are a JSONL file in the artifact store::

    ev = records.get("ev-1a2b")                      # an id or a unique prefix
    rows = records.read_examples(ev)                 # [{"index", "key", "prediction", "scores", "stats", ...}]
    records.list_evaluations(dataset="support")      # newest first
    records.leaderboard("support", split="test", metric="json_field_accuracy")
"""

from __future__ import annotations

import json
import math
import secrets

from sqlalchemy import select

from oikyo.errors import OikyoError
from oikyo.store import artifacts, db
from oikyo.store.models import Evaluation

ROLES = ("model", "base", "few_shot")
# The metric a leaderboard or a summary leads with, when the user names none: the first one present.
PRIMARY = ("json_field_accuracy", "accuracy", "rougeL", "token_f1", "normalized_exact_match", "exact_match", "loss")


def new_id() -> str:
    return f"ev-{secrets.token_hex(4)}"


def write_examples(rows: list[dict]) -> str:
    """Store per-example rows as JSONL; returns the artifact key."""
    data = "".join(json.dumps(row, ensure_ascii=False, allow_nan=True) + "\n" for row in rows)
    return artifacts.put_bytes(data.encode("utf-8"), ".jsonl")


def read_examples(evaluation: Evaluation) -> list[dict]:
    """The per-example rows of an evaluation ([] when it has none)."""
    if not evaluation.artifact:
        return []
    path = artifacts.path_of(evaluation.artifact)
    if not path.is_file():
        raise OikyoError(f"the per-example outputs of {evaluation.id} are missing from the artifact store ({path})")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def save(records: list[Evaluation]) -> None:
    with db.session() as s:
        for record in records:
            s.add(record)


def get(ref: str) -> Evaluation:
    """The evaluation with id ``ref`` or a unique prefix of it (``ev-`` may be left out)."""
    return db.by_id_prefix(Evaluation, ref, id_prefix="ev-", noun="evaluation", list_hint="oikyo evals list")


def list_evaluations(*, dataset: str | None = None, split: str | None = None, model_version_id: str | None = None,
                     base_model: str | None = None, group_id: str | None = None, role: str | None = None,
                     limit: int | None = 100) -> list[Evaluation]:
    """Evaluations, newest first, filtered by dataset version id, split, model, group or role."""
    query = select(Evaluation).order_by(Evaluation.created_at.desc(), Evaluation.id)
    for column, value in ((Evaluation.dataset_version_id, dataset), (Evaluation.split, split),
                          (Evaluation.model_version_id, model_version_id), (Evaluation.base_model, base_model),
                          (Evaluation.group_id, group_id), (Evaluation.role, role)):
        if value is not None:
            query = query.where(column == value)
    if limit:
        query = query.limit(limit)
    with db.session() as s:
        return list(s.scalars(query))


def group(evaluation: Evaluation) -> list[Evaluation]:
    """The evaluations made together with this one (model, base, few-shot), in role order."""
    found = list_evaluations(group_id=evaluation.group_id, limit=None)
    return sorted(found, key=lambda e: ROLES.index(e.role) if e.role in ROLES else len(ROLES))


def system_name(evaluation: Evaluation) -> str:
    """What was evaluated, as a person reads it: ``mv-1a2b``, ``smollm2-135m-instruct`` or ``... (3-shot)``."""
    if evaluation.role == "few_shot":
        k = (evaluation.settings or {}).get("few_shot", {}).get("k", "k")
        return f"{evaluation.base_model} ({k}-shot)"
    return evaluation.model_version_id or evaluation.base_model


def primary_metric(metrics: dict) -> str | None:
    return next((m for m in PRIMARY if isinstance(metrics.get(m), (int, float))), None)


def describe(evaluation: Evaluation) -> dict:
    """A JSON-ready description of an evaluation (no per-example rows)."""
    return {
        "id": evaluation.id, "group_id": evaluation.group_id, "run_id": evaluation.run_id, "role": evaluation.role,
        "system": system_name(evaluation), "model_ref": evaluation.model_ref,
        "model_version_id": evaluation.model_version_id, "base_model": evaluation.base_model,
        "dataset_version_id": evaluation.dataset_version_id, "split": evaluation.split, "rows": evaluation.rows,
        "metrics": evaluation.metrics, "metric_versions": evaluation.metric_versions,
        "generation": evaluation.generation, "settings": evaluation.settings, "forgetting": evaluation.forgetting,
        "forced_overlap": evaluation.forced_overlap, "overlap": evaluation.overlap,
        "artifact": evaluation.artifact,
        "created_at": evaluation.created_at.isoformat() if evaluation.created_at else None,
    }


def _higher_is_better(metric: str) -> bool:
    from oikyo.evaluate import metrics as registry

    return registry.METRICS[metric].higher_is_better if metric in registry.METRICS else True


def leaderboard(dataset: str, *, split: str | None = None, metric: str | None = None) -> dict:
    """Every system evaluated on a dataset version (its newest evaluation per split), ranked by ``metric``
    (systems without that metric, such as few-shot for ``loss``, are left out).

    Returns ``{"dataset", "split", "metric", "higher_is_better", "rows": [{rank, system, value, ...}]}``.
    """
    from oikyo.data import versions

    version = versions.resolve(dataset)
    found = list_evaluations(dataset=version.id, split=split, limit=None)
    if not found:
        raise OikyoError(f"no evaluations on {version.name}@{version.id}{':' + split if split else ''} yet; "
                         "run `oikyo eval MODEL --dataset ...` first")
    newest: dict[tuple, Evaluation] = {}
    for ev in found:  # newest first: keep the first seen per system and split
        newest.setdefault((system_name(ev), ev.split), ev)
    chosen = list(newest.values())
    metric = metric or primary_metric(chosen[0].metrics) or next(iter(chosen[0].metrics), None)
    if metric is None or not any(metric in ev.metrics for ev in chosen):
        known = sorted({m for ev in chosen for m in ev.metrics})
        raise OikyoError(f"no evaluation on this dataset has the metric {metric!r}; metrics: {', '.join(known)}")
    higher = _higher_is_better(metric)
    scored = [ev for ev in chosen if isinstance(ev.metrics.get(metric), (int, float))]  # e.g. few-shot has no loss

    def key(ev: Evaluation):
        value = ev.metrics[metric]
        return (math.isnan(value), -value if higher else value)

    rows = []
    for rank, ev in enumerate(sorted(scored, key=key), start=1):
        rows.append({"rank": rank, "system": system_name(ev), "role": ev.role, "evaluation": ev.id,
                     "model_version_id": ev.model_version_id, "base_model": ev.base_model, "split": ev.split,
                     "value": ev.metrics.get(metric), "rows": ev.rows, "forced_overlap": ev.forced_overlap,
                     "forgetting": (ev.forgetting or {}).get("forgetting"),
                     "created_at": ev.created_at.isoformat() if ev.created_at else None})
    return {"dataset": version.id, "dataset_name": version.name, "split": split, "metric": metric,
            "higher_is_better": higher, "rows": rows}
