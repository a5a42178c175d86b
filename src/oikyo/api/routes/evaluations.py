"""REST routes: evaluations (list, submit as a job, show), comparisons and the leaderboard.

Adapts :mod:`oikyo.evaluate.jobs` (``oikyo eval``), :mod:`oikyo.evaluate.records` (``oikyo evals``,
``oikyo models leaderboard``) and :mod:`oikyo.evaluate.compare` (``oikyo compare``). A dataset may
be given as ``VERSION:split`` as on the command line; ``split=all`` means every row.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from oikyo.api.refs import check_ref
from oikyo.api.routes import DB_INT_MAX
from oikyo.api.routes.runs import run_info, worker_status
from oikyo.errors import OikyoError

router = APIRouter(tags=["evaluations"])


def dataset_and_split(dataset: str | None, split: str | None) -> tuple[str | None, str | None]:
    """``VERSION[:split]`` plus a separate split as (dataset ref, split); the split given twice must agree."""
    if dataset:
        check_ref(dataset, "dataset")
    if dataset and ":" in dataset:
        dataset, _, in_ref = dataset.rpartition(":")
        if split and split != in_ref:
            raise HTTPException(400, f"the split is given twice ({in_ref!r} in dataset and {split!r} in split)")
        split = in_ref
    return dataset or None, split


class EvaluationRequest(BaseModel):
    model: str = Field(description="Model version id, training run id, or base model name.")
    dataset: str | None = Field(None, description="Dataset VERSION[:split] (default: the model's training dataset).")
    split: str | None = Field(None, description="test (default), validation, train or all.")
    metrics: list[str] | None = Field(None, description="Metrics to compute (default: chosen from the answers).")
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N examples only.")
    max_new_tokens: int | None = Field(None, ge=1, description="Answer length limit (default: from the references).")
    batch_size: int = Field(16, ge=1, description="Sequences generated together.")
    baselines: bool = Field(True, description="Also evaluate the base model and a few-shot baseline.")
    few_shot_k: int = Field(3, ge=0, description="Training examples in the few-shot baseline's prompt.")
    few_shot_seed: int = Field(0, description="Seed that picks the few-shot examples.")
    probe: bool = Field(True, description="Run the forgetting probe on the model and its base.")
    forgetting_threshold: float = Field(0.10, description="Flag forgetting above this.")
    force: bool = Field(False, description="Evaluate even on rows the model was trained on (marked forced_overlap).")
    name: str | None = Field(None, max_length=200, description="A name for the job.")
    start_worker: bool = Field(True, description="Start a background worker when none is running.")


class CompareRequest(BaseModel):
    a: str = Field(description="Evaluation id, model version, run, or base model name.")
    b: str = Field(description="Evaluation id, model version, run, or base model name.")
    dataset: str | None = Field(None, description="Only evaluations on this dataset VERSION[:split].")
    split: str | None = None
    resamples: int = Field(2000, ge=100, le=100_000, description="Paired bootstrap resamples.")
    seed: int = Field(0, description="Bootstrap seed (same seed, same intervals).")
    examples: int = Field(5, ge=0, le=200, description="Examples where the two differ most, side by side.")


@router.get("/evaluations")
def list_evaluations(dataset: str | None = None, split: str | None = None,
                     model: str | None = Query(None, description="Model version, run or base model."),
                     role: str | None = Query(None, description="model, base or few_shot."),
                     limit: int = Query(100, ge=1, le=1000)) -> list[dict]:
    """Stored evaluations, newest first."""
    from oikyo.data import versions
    from oikyo.evaluate import records
    from oikyo.evaluate.targets import resolve_target

    dataset, split = dataset_and_split(dataset, split)
    dataset_id = versions.resolve(dataset).id if dataset else None
    filters = {}
    if model:
        target = resolve_target(check_ref(model, "model"))
        filters = {"base_model": target.base_model} if target.is_base else {"model_version_id": target.model_version_id}
    found = records.list_evaluations(dataset=dataset_id, split=split, role=role, limit=limit, **filters)
    return [records.describe(e) for e in found]


@router.post("/evaluations", status_code=201)
def submit_evaluation(body: EvaluationRequest) -> dict:
    """Check and queue an evaluation job (the model, its base and a few-shot baseline); 201 with the job."""
    from oikyo.evaluate import jobs
    from oikyo.evaluate.runner import EvalSpec

    dataset, split = dataset_and_split(body.dataset, body.split)
    split = split or "test"
    spec = EvalSpec(model=body.model, dataset=dataset, split=None if split == "all" else split,
                    metrics=body.metrics or None, limit=body.limit, max_new_tokens=body.max_new_tokens,
                    batch_size=body.batch_size, baselines=body.baselines, few_shot_k=body.few_shot_k,
                    few_shot_seed=body.few_shot_seed, probe=body.probe,
                    forgetting_threshold=body.forgetting_threshold, force=body.force)
    run = jobs.submit_evaluation(spec, name=body.name)
    return {**run_info(run), "worker": worker_status(body.start_worker)}


@router.get("/evaluations/{evaluation}")
def show_evaluation(evaluation: str, examples: int = Query(20, ge=0, le=1000),
                    offset: int = Query(0, ge=0, le=DB_INT_MAX)) -> dict:
    """One evaluation: model, dataset, split, metric versions, generation settings, results, its group and
    per-example outputs (``examples`` of them from ``offset``)."""
    from oikyo.evaluate import records

    ev = records.get(check_ref(evaluation, "evaluation id"))
    rows = records.read_examples(ev)
    group = [{"id": e.id, "role": e.role, "system": records.system_name(e), "metrics": e.metrics}
             for e in records.group(ev)]
    return {**records.describe(ev), "group": group, "examples_total": len(rows),
            "examples": rows[offset:offset + examples]}


@router.post("/compare")
def compare(body: CompareRequest) -> dict:
    """A against B on the same examples: metric deltas with paired bootstrap CIs and a verdict per metric,
    the examples where they differ most, and the training config diff."""
    from oikyo.evaluate.compare import compare as run_compare

    dataset, split = dataset_and_split(body.dataset, body.split)
    if body.a.strip() == body.b.strip():
        raise OikyoError("A and B are the same; pick two different models or evaluations")
    return run_compare(body.a, body.b, dataset=dataset, split=split, resamples=body.resamples, seed=body.seed,
                       examples=body.examples)


@router.get("/leaderboard")
def leaderboard(dataset: str, split: str | None = None, metric: str | None = None) -> dict:
    """Every model evaluated on a dataset version (its newest evaluation), ranked by ``metric``
    (default: the primary metric of the results)."""
    from oikyo.evaluate import records

    dataset, split = dataset_and_split(dataset, split)
    return records.leaderboard(dataset, split=split, metric=metric)
