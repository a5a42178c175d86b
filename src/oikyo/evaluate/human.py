"""Blind pairwise human evaluation: which of two models' answers do people prefer?

A session pairs the answers of systems A and B to the same prompts, taken from their stored
evaluations on one dataset version and split (the per-example outputs, paired by row hash as
:mod:`oikyo.evaluate.compare` pairs them). Each pair shows the two answers as *left* and *right*
in an order drawn with the session's seeded RNG; which side is A stays in the store and is never
part of what a rater sees. A pair is rated once: left, right or tie. The summary counts ties as
half a win for each side and gives A's win rate with a Wilson 95% score interval::

    from oikyo.evaluate import human
    session = human.start_session("mv-1a2b", "smollm2-135m-instruct", "support", split="test", n=20)
    first = session["pairs"][0]            # {"pair_id", "position", "prompt", "left", "right", "choice"}
    human.rate(first["pair_id"], "left")
    human.summary("mv-1a2b", "smollm2-135m-instruct")   # {"win_rate_a", "ci95", "wins_a", "ties", ...}

Evaluate both models on the dataset first (``oikyo eval MODEL --dataset VERSION:test``): the
session refuses, saying so, when either has no stored evaluation there.
"""

from __future__ import annotations

import random
import secrets

from sqlalchemy import func, or_, select, update

from oikyo.errors import OikyoError
from oikyo.evaluate.bootstrap import Z95, wilson_interval
from oikyo.store import db
from oikyo.store.models import Evaluation, RatingPair, RatingSession, utcnow

CHOICES = ("left", "right", "tie")
ANY_SPLIT = object()  # start_session(split=ANY_SPLIT): A's newest evaluation on the dataset, B's on the same split


class UnknownPair(OikyoError):
    """No rating pair (or session) has this id."""

    http_status = 404


class AlreadyRated(OikyoError):
    """The pair was rated before; a pair is rated once."""

    http_status = 409


# ----------------------------------------------------------------------------- statistics


# ----------------------------------------------------------------------------- sessions


def _evaluation_on(ref: str, version_id: str, split, dataset_label: str) -> Evaluation:
    """The newest stored evaluation of ``ref`` on this dataset version and split (a clear error when none)."""
    from oikyo.evaluate import compare

    found, label = compare._candidates(ref)  # noqa: SLF001 - the same model lookup `oikyo compare` uses
    on_data = [e for e in found if e.dataset_version_id == version_id and (split is ANY_SPLIT or e.split == split)]
    if not on_data:
        raise OikyoError(f"{label} has no stored evaluation on {dataset_label}; evaluate it there first "
                         f"(`oikyo eval {ref} --dataset {dataset_label}`)")
    return on_data[0]


def _answers(evaluation: Evaluation) -> dict[str, dict]:
    """Per-example rows with a generated answer, by row hash."""
    from oikyo.evaluate import records

    return {row["key"]: row for row in records.read_examples(evaluation) if row.get("prediction") is not None}


def start_session(a: str, b: str, dataset: str, *, split=ANY_SPLIT, n: int | None = None,
                  seed: int | None = None) -> dict:
    """Pair A's and B's answers to the same prompts (``n`` of them, drawn with ``seed``; default all),
    randomize left/right per pair and store the session; returns what a rater sees (:func:`session_view`).

    ``split``: a split name, None for evaluations on every row, or (default) A's newest evaluation
    on the dataset whatever its split, with B's on the same split.
    """
    from oikyo.data import versions
    from oikyo.evaluate import records

    version = versions.resolve(dataset)
    def label(split_name) -> str:
        return f"{version.name}@{version.id}" + (f":{split_name}" if isinstance(split_name, str) else "")

    ev_a = _evaluation_on(a, version.id, split, label(split))
    ev_b = _evaluation_on(b, version.id, ev_a.split, label(ev_a.split))
    dataset_label = label(ev_a.split)

    system_a, system_b = records.system_name(ev_a), records.system_name(ev_b)
    if ev_a.id == ev_b.id or system_a == system_b:
        raise OikyoError(f"A and B are the same model ({system_a}); pick two different models to compare")
    answers_a, answers_b = _answers(ev_a), _answers(ev_b)
    keys = sorted((k for k in answers_a if k in answers_b), key=lambda k: answers_a[k]["index"])
    if not keys:
        raise OikyoError(f"{ev_a.id} and {ev_b.id} have no generated answers to the same prompts on {dataset_label}")
    if n is not None and n < 1:
        raise OikyoError("n must be at least 1")
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    rng = random.Random(seed)
    if n is not None and n < len(keys):
        chosen = set(rng.sample(keys, n))
        keys = [k for k in keys if k in chosen]
    session_id = f"rs-{secrets.token_hex(4)}"
    with db.session() as s:
        s.add(RatingSession(id=session_id, system_a=system_a, system_b=system_b, evaluation_a=ev_a.id,
                            evaluation_b=ev_b.id, dataset_version_id=version.id, split=ev_a.split, seed=seed,
                            created_at=utcnow()))
        s.flush()
        for position, key in enumerate(keys):
            s.add(RatingPair(id=f"rp-{secrets.token_hex(6)}", session_id=session_id, position=position,
                             example_key=key, a_on_left=rng.random() < 0.5))
    return session_view(session_id)


def _get_session(session_id: str) -> RatingSession:
    with db.session() as s:
        found = s.get(RatingSession, session_id.strip())
    if found is None:
        raise UnknownPair(f"no rating session matches {session_id!r}")
    return found


def session_view(session_id: str) -> dict:
    """A session as its rater sees it: prompts with a left and a right answer, and the choices made so far.

    Which side is which model is not in it.
    """
    session = _get_session(session_id)
    with db.session() as s:
        pairs = list(s.scalars(select(RatingPair).where(RatingPair.session_id == session.id)
                               .order_by(RatingPair.position)))
        ev_a, ev_b = s.get(Evaluation, session.evaluation_a), s.get(Evaluation, session.evaluation_b)
    rows_a, rows_b = _answers(ev_a), _answers(ev_b)
    shown = []
    for pair in pairs:
        row_a, row_b = rows_a.get(pair.example_key), rows_b.get(pair.example_key)
        if row_a is None or row_b is None:
            continue  # an artifact changed under us; nothing sensible to show
        left, right = (row_a, row_b) if pair.a_on_left else (row_b, row_a)
        shown.append({"pair_id": pair.id, "position": pair.position, "prompt": row_a.get("question") or "",
                      "left": left["prediction"], "right": right["prediction"], "choice": pair.choice})
    rated = sum(1 for p in shown if p["choice"] is not None)
    return {"session_id": session.id, "a": session.system_a, "b": session.system_b,
            "dataset_version_id": session.dataset_version_id, "split": session.split, "n": len(shown),
            "rated": rated, "remaining": len(shown) - rated, "pairs": shown,
            "created_at": session.created_at.isoformat() if session.created_at else None}


def list_sessions(limit: int = 50) -> list[dict]:
    """Rating sessions, newest first, with how many pairs are rated."""
    with db.session() as s:
        sessions = list(s.scalars(select(RatingSession).order_by(RatingSession.created_at.desc()).limit(limit)))
        counts = {sid: (total, rated) for sid, total, rated in s.execute(
            select(RatingPair.session_id, func.count(), func.count(RatingPair.choice))
            .where(RatingPair.session_id.in_([x.id for x in sessions])).group_by(RatingPair.session_id))}
    return [{"session_id": x.id, "a": x.system_a, "b": x.system_b, "dataset_version_id": x.dataset_version_id,
             "split": x.split, "n": counts.get(x.id, (0, 0))[0], "rated": counts.get(x.id, (0, 0))[1],
             "created_at": x.created_at.isoformat() if x.created_at else None} for x in sessions]


def rate(pair_id: str, choice: str) -> dict:
    """Record the rater's choice for a pair (left, right or tie), once; returns the session's progress."""
    if choice not in CHOICES:
        raise OikyoError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
    pair_id = pair_id.strip()
    with db.session() as s:
        pair = s.get(RatingPair, pair_id)
        if pair is None:
            raise UnknownPair(f"unknown rating pair {pair_id!r}")
        winner = "tie" if choice == "tie" else ("a" if (choice == "left") == pair.a_on_left else "b")
        # Conditional on "not rated yet", so two raters racing on one pair cannot both count.
        changed = s.execute(update(RatingPair).where(RatingPair.id == pair_id, RatingPair.choice.is_(None))
                            .values(choice=choice, winner=winner, rated_at=utcnow())
                            .execution_options(synchronize_session=False)).rowcount
        if changed != 1:
            raise AlreadyRated(f"pair {pair_id} was already rated; a pair is rated once")
        session_id = pair.session_id
        total, rated = s.execute(select(func.count(), func.count(RatingPair.choice))
                                 .where(RatingPair.session_id == session_id)).one()
    return {"pair_id": pair_id, "choice": choice, "session_id": session_id, "rated": rated,
            "remaining": total - rated}


# ----------------------------------------------------------------------------- results


def system_label(ref: str) -> str:
    """How sessions name the model ``ref`` means (a model version id, or a base model name)."""
    from oikyo.evaluate import records
    from oikyo.evaluate.targets import resolve_target

    if ref.strip().startswith("ev-"):
        return records.system_name(records.get(ref))
    return resolve_target(ref).label


def tally(winners: list[str], confidence_z: float = Z95) -> dict:
    """Counts, A's win rate (ties count half) and its Wilson interval, from winners "a" | "b" | "tie"."""
    wins_a, wins_b, ties = winners.count("a"), winners.count("b"), winners.count("tie")
    n = wins_a + wins_b + ties
    score = wins_a + 0.5 * ties
    interval = wilson_interval(score, n, confidence_z)
    return {"n": n, "wins_a": wins_a, "wins_b": wins_b, "ties": ties,
            "win_rate_a": score / n if n else None, "ci95": list(interval) if interval else None,
            "method": "Wilson score interval, ties counted as half a win"}


def summary(a: str, b: str, *, session: str | None = None, dataset: str | None = None) -> dict:
    """A's win rate over B from every rated pair of every session between them (either way round),
    optionally of one session or one dataset version."""
    label_a, label_b = system_label(a), system_label(b)
    query = (select(RatingSession.id, RatingSession.system_a, RatingPair.winner)
             .join(RatingPair, RatingPair.session_id == RatingSession.id)
             .where(or_((RatingSession.system_a == label_a) & (RatingSession.system_b == label_b),
                        (RatingSession.system_a == label_b) & (RatingSession.system_b == label_a))))
    if session:
        query = query.where(RatingSession.id == _get_session(session).id)
    if dataset:
        from oikyo.data import versions

        query = query.where(RatingSession.dataset_version_id == versions.resolve(dataset).id)
    with db.session() as s:
        found = s.execute(query).all()
    flip = {"a": "b", "b": "a", "tie": "tie"}
    winners = [w if system_a == label_a else flip[w] for _sid, system_a, w in found if w is not None]
    sessions = sorted({sid for sid, _a, _w in found})
    return {"a": label_a, "b": label_b, **tally(winners), "pending": sum(1 for *_x, w in found if w is None),
            "sessions": sessions}
