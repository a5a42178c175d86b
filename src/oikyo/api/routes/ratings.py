"""REST routes: blind pairwise human rating of two models' answers (:mod:`oikyo.evaluate.human`).

``POST /ratings/sessions`` pairs the answers of A and B from their stored evaluations on a dataset
and returns the pairs as ``left``/``right`` in a per-pair random order; which side is which model is
kept in the store and never sent. ``POST /ratings`` records one choice per pair (409 for a second).
``GET /ratings/summary?a=&b=`` gives A's win rate with its 95% interval.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from oikyo.api.refs import check_ref
from oikyo.api.routes.evaluations import dataset_and_split

router = APIRouter(tags=["ratings"])


class SessionRequest(BaseModel):
    a: str = Field(min_length=1, description="Model A: model version, run, base model name or evaluation id.")
    b: str = Field(min_length=1, description="Model B.")
    dataset: str = Field(min_length=1, description="Dataset VERSION[:split] both were evaluated on.")
    split: str | None = Field(None, description="Split (default: A's newest evaluation there; 'all': every row).")
    n: int | None = Field(None, ge=1, le=10_000, description="Rate this many prompts, drawn at random (default: all).")
    seed: int | None = Field(None, description="Seed of the draw and of the left/right order (default: random).")


class RatingRequest(BaseModel):
    pair_id: str = Field(description="The pair's id, from the session.")
    choice: Literal["left", "right", "tie"] = Field(description="The better answer, or a tie.")


@router.post("/ratings/sessions", status_code=201)
def start_session(body: SessionRequest) -> dict:
    """Start a blind rating session: ``{session_id, pairs: [{pair_id, prompt, left, right}]}``."""
    from oikyo.evaluate import human

    dataset, split = dataset_and_split(body.dataset, body.split)
    kwargs = {} if split is None else {"split": None if split == "all" else split}
    return human.start_session(body.a, body.b, dataset, n=body.n, seed=body.seed, **kwargs)


@router.get("/ratings/sessions")
def list_sessions(limit: int = Query(50, ge=1, le=500)) -> list[dict]:
    """Rating sessions, newest first, with their progress."""
    from oikyo.evaluate import human

    return human.list_sessions(limit=limit)


@router.get("/ratings/sessions/{session_id}")
def show_session(session_id: str) -> dict:
    """A session's pairs and the choices made so far (to continue rating)."""
    from oikyo.evaluate import human

    return human.session_view(check_ref(session_id, "session id"))


@router.post("/ratings")
def rate(body: RatingRequest) -> dict:
    """Record the choice for one pair (once): ``{pair_id, choice, session_id, rated, remaining}``."""
    from oikyo.evaluate import human

    return human.rate(check_ref(body.pair_id, "pair id"), body.choice)


@router.get("/ratings/summary")
def summary(a: str, b: str, session: str | None = None, dataset: str | None = None) -> dict:
    """A's win rate over B (ties count half) with a Wilson 95% interval, and the counts."""
    from oikyo.evaluate import human

    check_ref(a, "model a")
    check_ref(b, "model b")
    if session:
        check_ref(session, "session id")
    if dataset:
        dataset, _split = dataset_and_split(dataset, None)
    return human.summary(a, b, session=session, dataset=dataset)
