"""Blind pairwise human rating: pairs from stored evaluations, a blind and seeded left/right order,
one rating per pair, and A's win rate with a Wilson interval checked against hand computation."""

from __future__ import annotations

import json

import pytest
from evalhelpers import make_json_dataset

from oikyo.errors import OikyoError
from oikyo.evaluate import human, records
from oikyo.store import db
from oikyo.store.models import Evaluation, ModelVersion, utcnow


def add_model_version(mv_id: str) -> str:
    with db.session() as s:
        s.add(ModelVersion(id=mv_id, run_id=None, base_model="base-model", kind="adapter", path="/nowhere",
                           lineage={}, created_at=utcnow()))
    return mv_id


def seed_evaluation(dataset, mv_id: str, answers: dict[str, str | None], *, split: str = "test") -> Evaluation:
    """A stored evaluation of model version ``mv_id`` whose per-example answers are ``{key: prediction}``."""
    rows = [{"index": i, "key": key, "question": f"Question {key}?", "reference": "ref", "prediction": answer,
             "scores": {}, "stats": {}} for i, (key, answer) in enumerate(answers.items())]
    ev = Evaluation(id=records.new_id(), group_id=f"g-{mv_id}", run_id=None, role="model", model_ref=mv_id,
                    model_version_id=mv_id, base_model="base-model", dataset_version_id=dataset.id, split=split,
                    rows=len(rows), metrics={"accuracy": 0.5}, metric_versions={"accuracy": "1"}, generation={},
                    settings={}, forced_overlap=False, artifact=records.write_examples(rows), created_at=utcnow())
    records.save([ev])
    return ev


@pytest.fixture
def pair_of_models(backend, tmp_path):
    """Two model versions evaluated on the same 12 prompts (B lacks one; one of A's answers is missing),
    on SQLite and on PostgreSQL."""
    dataset = make_json_dataset(tmp_path)
    a, b = add_model_version("mv-0000000a"), add_model_version("mv-0000000b")
    keys = [f"key{i:02d}" for i in range(12)]
    seed_evaluation(dataset, a, {k: (None if k == "key03" else f"A answers {k}") for k in keys})
    seed_evaluation(dataset, b, {k: f"B answers {k}" for k in keys if k != "key07"})
    return dataset, a, b


def test_win_rate_and_interval_match_a_hand_computation():
    # 6 wins, 2 losses, 2 ties: (6 + 2/2) / 10 = 0.7. Wilson, z = 1.959964, n = 10, p = 0.7:
    # centre = (0.7 + z²/20) / (1 + z²/10) = 0.892073 / 1.384146 = 0.644493
    # half = z * sqrt(0.7*0.3/10 + z²/400) / 1.384146 = 1.959964 * 0.174939 / 1.384146 = 0.247715
    result = human.tally(["a"] * 6 + ["b"] * 2 + ["tie"] * 2)
    assert (result["n"], result["wins_a"], result["wins_b"], result["ties"]) == (10, 6, 2, 2)
    assert result["win_rate_a"] == pytest.approx(0.7)
    low, high = result["ci95"]
    assert low == pytest.approx(0.644493 - 0.247715, abs=2e-6) and high == pytest.approx(0.644493 + 0.247715, abs=2e-6)
    # 5 wins of 5: the upper bound is 1, the lower one n / (n + z²) = 5 / 8.841459.
    assert human.tally(["a"] * 5)["ci95"] == pytest.approx([5 / 8.841459, 1.0], abs=1e-6)
    nothing = human.tally([])
    assert nothing["n"] == 0 and nothing["win_rate_a"] is None and nothing["ci95"] is None


def test_a_session_pairs_answers_to_the_same_prompts_in_a_blind_seeded_order(pair_of_models):
    dataset, a, b = pair_of_models
    session = human.start_session(a, b, dataset.name, split="test", seed=7)
    pairs = session["pairs"]
    # key03 (A has no answer) and key07 (B has none) cannot be paired.
    assert len(pairs) == 10 and session["n"] == 10 and session["remaining"] == 10
    assert [p["prompt"] for p in pairs] == [f"Question key{i:02d}?" for i in range(12) if i not in (3, 7)]
    for pair in pairs:
        assert set(pair) == {"pair_id", "position", "prompt", "left", "right", "choice"}
        key = pair["prompt"][len("Question "):-1]
        assert {pair["left"], pair["right"]} == {f"A answers {key}", f"B answers {key}"}
    a_left = [p["left"].startswith("A ") for p in pairs]
    assert any(a_left) and not all(a_left)  # the order is drawn per pair, not fixed
    text = json.dumps(session)
    assert "a_on_left" not in text and "winner" not in text and "ev-" not in text  # no side mapping in it
    # The same seed draws the same order; the view read back later is the same too.
    again = human.start_session(a, b, dataset.name, split="test", seed=7)
    assert [p["left"] for p in again["pairs"]] == [p["left"] for p in pairs]
    assert human.session_view(session["session_id"])["pairs"] == pairs
    assert len(human.start_session(a, b, dataset.id, seed=1, n=4)["pairs"]) == 4


def test_ratings_count_once_and_the_summary_gives_a_win_rate(pair_of_models):
    dataset, a, b = pair_of_models
    session = human.start_session(a, b, dataset.name, seed=3)
    pairs = session["pairs"]

    def choose(pair, winner: str) -> str:
        if winner == "tie":
            return "tie"
        return "left" if pair["left"].startswith("A " if winner == "a" else "B ") else "right"

    plan = ["a"] * 6 + ["b"] * 2 + ["tie"] * 2
    for pair, winner in zip(pairs, plan):
        result = human.rate(pair["pair_id"], choose(pair, winner))
        assert set(result) == {"pair_id", "choice", "session_id", "rated", "remaining"}  # nothing about sides
    assert result["rated"] == 10 and result["remaining"] == 0
    with pytest.raises(human.AlreadyRated, match="already rated"):
        human.rate(pairs[0]["pair_id"], "tie")
    with pytest.raises(human.UnknownPair):
        human.rate("rp-000000000000", "left")
    with pytest.raises(OikyoError, match="choice must be one of"):
        human.rate(pairs[0]["pair_id"], "both")

    summary = human.summary(a, b)
    assert (summary["wins_a"], summary["wins_b"], summary["ties"], summary["n"]) == (6, 2, 2, 10)
    assert summary["win_rate_a"] == pytest.approx(0.7) and summary["ci95"][0] == pytest.approx(0.396777, abs=1e-4)
    assert summary["sessions"] == [session["session_id"]] and summary["pending"] == 0
    reverse = human.summary(b, a)  # the same ratings seen from B
    assert (reverse["wins_a"], reverse["wins_b"]) == (2, 6) and reverse["win_rate_a"] == pytest.approx(0.3)

    # A second session with the roles swapped counts toward the same pairing of models.
    swapped = human.start_session(b, a, dataset.name, seed=4, n=2)
    for pair in swapped["pairs"]:
        human.rate(pair["pair_id"], choose(pair, "a"))  # the rater prefers A's answer
    combined = human.summary(a, b)
    assert (combined["wins_a"], combined["n"]) == (8, 12) and len(combined["sessions"]) == 2
    only_first = human.summary(a, b, session=session["session_id"])
    assert only_first["n"] == 10
    assert [s["rated"] for s in human.list_sessions()] == [2, 10]


def test_models_without_an_evaluation_on_the_dataset_are_refused_clearly(tmp_path, pair_of_models):
    dataset, a, b = pair_of_models
    other = make_json_dataset(tmp_path, name="other", n=20)
    lonely = add_model_version("mv-0000000c")
    with pytest.raises(OikyoError, match="mv-0000000c has no evaluations yet"):
        human.start_session(a, lonely, dataset.name)
    seed_evaluation(other, lonely, {"key00": "C"})
    with pytest.raises(OikyoError, match=r"mv-0000000c has no stored evaluation on items@"):
        human.start_session(a, lonely, dataset.name)
    with pytest.raises(OikyoError, match="has no stored evaluation on"):
        human.start_session(a, b, dataset.name, split="validation")
    with pytest.raises(OikyoError, match="the same model"):
        human.start_session(a, a, dataset.name)
    with pytest.raises(OikyoError, match="no rating session matches"):
        human.session_view("rs-nothere")
