"""Production traffic and feedback become a dataset version (`oikyo data from-traffic`), and feedback
may carry a correction (the ideal answer).

Requests and feedback are written straight to the test workspace's store, as the gateway writes them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

import oikyo
from oikyo.data import traffic, versions
from oikyo.errors import OikyoError
from oikyo.store import db
from oikyo.store.models import DatasetVersion, Deployment, Evaluation, Feedback, ModelVersion, ServedRequest, utcnow

DEPLOYMENT = "bot"
NOW = utcnow()
EVAL_QUESTION = "Explain in simple words why the sky looks blue during a clear day"


# ----------------------------------------------------------------------------- records, as the gateway writes them


def _deployment(name: str = DEPLOYMENT, model: str = "mv-served", log_requests: bool = True) -> None:
    with db.session() as s:
        s.add(Deployment(name=name, model=model, variants=[{"label": model, "model": model, "weight": 100}],
                         host="127.0.0.1", port=1, log_requests=log_requests, settings={}, state="stopped"))


def _request(rid: str, prompt: str | None, answer: str | None, *, minutes_ago: float = 30, status: int = 200,
             endpoint: str = "chat", model: str = "mv-served", deployment: str = DEPLOYMENT) -> str:
    request = None if prompt is None else {"messages": [{"role": "system", "content": "Be brief."},
                                                        {"role": "user", "content": prompt, "refusal": None}],
                                           "params": {"max_tokens": 64}}
    with db.session() as s:
        s.add(ServedRequest(id=rid, deployment=deployment, variant=model, model=model, endpoint=endpoint,
                            status=status, latency_s=0.1, request=request, response=answer,
                            created_at=NOW - timedelta(minutes=minutes_ago)))
    return rid


def _feedback(rid: str, rating: float | None = None, correction: str | None = None) -> Feedback:
    from oikyo.serve.gateway.request_log import record_feedback

    return record_feedback(DEPLOYMENT, rid, rating, correction=correction)


def _import(tmp_path: Path, name: str, pairs: list[tuple[str, str]]) -> DatasetVersion:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in pairs))
    return versions.import_dataset(path, name=name).version


def _training(tmp_path: Path) -> DatasetVersion:
    """A split training dataset, and the served model version trained on it."""
    from oikyo.data.split import split_dataset

    base = _import(tmp_path, "train", [(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(30)])
    split, _ = split_dataset(base.id, validation=0.1, test=0.1, seed=0)
    with db.session() as s:
        s.add(ModelVersion(id="mv-served", base_model="tiny", kind="adapter", path="/nowhere",
                           lineage={"dataset_version": split.id}))
    return split


def _eval_set(tmp_path: Path) -> DatasetVersion:
    """A dataset an evaluation was run on (registered by that Evaluation record alone)."""
    version = _import(tmp_path, "quiz", [("Name the capital of France.", "Paris"), (EVAL_QUESTION, "Scattering.")])
    with db.session() as s:
        s.add(Evaluation(id="ev-1", group_id="g-1", role="model", model_ref="mv-served", model_version_id="mv-served",
                         base_model="tiny", dataset_version_id=version.id, split=None, rows=2))
    return version


def _answers(version: DatasetVersion) -> dict[str, str]:
    """request id -> the row's answer (its last message)."""
    rows = list(versions.iter_rows(version))
    return {json.loads(r["metadata"])["request_id"]: r["messages"][-1]["content"] for r in rows}


# ----------------------------------------------------------------------------- the rules


def test_each_rule_is_applied_and_counted(tmp_path):
    split = _training(tmp_path)
    quiz = _eval_set(tmp_path)
    _deployment()
    train_row = next(versions.iter_rows(split, split="train"))
    test_row = next(versions.iter_rows(split, split="test"))
    keep_positive = _request("r-pos", "How do I reset my router to factory settings?", "Hold reset for 10 s.")
    _feedback(keep_positive, 1)
    _feedback(_request("r-neg", "Why is my bill so high?", "No idea."), -1)
    _request("r-unrated", "What are your opening hours?", "9 to 5.")
    _feedback(_request("r-neutral", "Can I pay by card?", "Maybe."), 0)
    corrected = _request("r-fix", "How long does shipping take?", "Forever.")
    _feedback(corrected, -1)
    _feedback(corrected, correction="Shipping takes 3 to 5 working days.")
    only_fix = _request("r-fix-only", "Do you ship abroad?", "No.")
    _feedback(only_fix, correction="Yes, to 40 countries.")
    _feedback(_request("r-500", "Hello?", "", status=500), 1)
    _feedback(_request("r-text", "Once upon a time", "there was a cat", endpoint="completions"), 1)
    _feedback(_request("r-nocontent", None, None), 1)
    _feedback(_request("r-copy", train_row["messages"][0]["content"], train_row["messages"][1]["content"]), 1)
    # Punctuation aside, the same words as r-pos: a near duplicate (Jaccard 1 on word shingles).
    _feedback(_request("r-near", "How do I reset my router to factory settings!", "Hold reset for 10 s!",
                       minutes_ago=20), 1)
    _feedback(_request("r-eval", "name the capital of   FRANCE.", "Paris."), 1)
    _feedback(_request("r-eval-inside", f"Hi there! {EVAL_QUESTION}? I have been wondering about this for "
                                        "many years now, thanks a lot", "Rayleigh scattering."), 1)
    _feedback(_request("r-heldout", test_row["messages"][0]["content"], "Some answer."), 1)
    pii = _request("r-pii", "Mail jane.doe@acme.io or call +44 20 7946 0958 about my order",
                   "I will write to jane.doe@acme.io today.")
    _feedback(pii, 1)
    _feedback(_request("r-old", "An old question about returns?", "Within 30 days.", minutes_ago=60 * 24 * 10), 1)

    version, report = traffic.from_traffic(DEPLOYMENT, since="7d")

    assert report["dropped"] == {
        "not_chat": 1, "error_status": 1, "unrated": 1, "neutral": 1, "negative": 1, "not_selected": 0,
        "no_content": 1, "invalid": 0, "overlaps_eval": 3, "duplicate_of_training": 1, "duplicate_in_traffic": 1,
    }
    assert report["requests"] == 15  # r-old is before --since
    assert report["requests"] == report["rows"] + sum(report["dropped"].values())
    assert report["kept"] == {"positive": 2, "corrected": 2} and version.rows == 4
    answers = _answers(version)
    assert answers == {
        "r-pos": "Hold reset for 10 s.",
        "r-fix": "Shipping takes 3 to 5 working days.",  # corrected although rated negative
        "r-fix-only": "Yes, to 40 countries.",
        "r-pii": "I will write to [EMAIL] today.",
    }
    rows = {json.loads(r["metadata"])["request_id"]: r for r in versions.iter_rows(version)}
    assert rows["r-pii"]["messages"][1] == {"role": "user",
                                            "content": "Mail [EMAIL] or call [PHONE] about my order"}
    assert rows["r-pos"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert report["pii_replaced"]["email"] == 2 and report["pii_replaced"]["phone"] == 1
    assert sum(report["pii_replaced"].values()) == 3
    # The lineage says where every row came from.
    lineage = version.lineage
    assert lineage["operation"] == "from_traffic" and lineage["deployment"] == DEPLOYMENT
    assert lineage["model_versions"] == ["mv-served"] and lineage["training_datasets"] == [split.id]
    assert sorted(lineage["request_ids"]) == sorted(answers)
    with db.session() as s:
        used = set(s.scalars(select(Feedback.id).where(Feedback.response_id.in_(list(answers)))))
    assert set(lineage["feedback_ids"]) == used and len(used) == 5  # r-fix has a rating and a correction
    assert json.loads(rows["r-fix"]["metadata"])["feedback"] == "corrected"
    assert lineage["dropped"] == report["dropped"] and lineage["pii_replaced"] == report["pii_replaced"]
    assert lineage["time_range"]["since"] == report["since"] and lineage["time_range"]["first_request"]
    assert f"{quiz.id}" in lineage["eval_sets"] and f"{split.id}:test" in lineage["eval_sets"]
    assert version.name == "bot-traffic" and version.kind == "conversations" and not report["existed"]


def test_feedback_kinds_can_be_chosen_and_the_same_traffic_gives_the_same_version():
    _deployment()
    _feedback(_request("r-up", "Is the shop open on Sunday?", "Yes, 10 to 4."), 1)
    _feedback(_request("r-fix", "Do you sell gift cards?", "No."), correction="Yes, from 10 to 200 euros.")
    assert traffic.count_usable(DEPLOYMENT) == 2
    assert traffic.count_usable(DEPLOYMENT, feedback=["corrected"]) == 1
    version, report = traffic.from_traffic(DEPLOYMENT, feedback="corrected", name="fixes")
    assert report["dropped"]["not_selected"] == 1 and _answers(version) == {"r-fix": "Yes, from 10 to 200 euros."}
    assert version.name == "fixes"
    again, report = traffic.from_traffic(DEPLOYMENT, feedback=["corrected"], name="fixes")
    assert again.id == version.id and report["existed"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DatasetVersion)) == 1


def test_stars_are_read_with_the_rule_monitoring_uses():
    from oikyo.monitor import quality

    _deployment()
    for rid, stars in (("r5", 5), ("r4", 4), ("r3", 3), ("r2", 2), ("r1", 1)):
        _feedback(_request(rid, f"Question {rid} about the warranty terms?", f"Answer {rid}."), stars)
        quality.note_feedback(DEPLOYMENT, rid, stars)
    version, report = traffic.from_traffic(DEPLOYMENT)
    assert set(_answers(version)) == {"r5", "r4"}
    assert report["dropped"]["neutral"] == 1 and report["dropped"]["negative"] == 2
    with db.session() as s:
        negative = {r.id for r in s.scalars(select(ServedRequest)) if r.quality["negative_feedback"]}
    assert negative == {"r2", "r1"}  # what monitoring counts as negative is never kept


def test_nothing_usable_is_an_error_that_stores_nothing():
    _deployment(log_requests=False)
    _request("r-a", "Where is my parcel?", "On its way.")
    _feedback(_request("r-b", None, None), 1)  # rated, but recorded without content
    _feedback(_request("r-c", "Can I return shoes?", "Yes."), -1)
    assert traffic.count_usable(DEPLOYMENT) == 0
    with pytest.raises(traffic.NothingUsable) as caught:
        traffic.from_traffic(DEPLOYMENT)
    message = str(caught.value)
    assert "nothing usable" in message and "1 unrated" in message and "1 no_content" in message
    assert "does not log request content" in message and "--log-requests" in message
    assert caught.value.report["rows"] == 0
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DatasetVersion)) == 0
    with pytest.raises(traffic.NothingUsable, match="no recorded requests"):
        traffic.from_traffic(DEPLOYMENT, since="10m", name="x")  # r-* are 30 minutes old
    with pytest.raises(OikyoError, match="no deployment named"):
        traffic.count_usable("nope")


def test_options_are_checked():
    now = utcnow()
    assert traffic.parse_since("12h", now=now) == now - timedelta(hours=12)
    assert traffic.parse_since("7d", now=now) == now - timedelta(days=7)
    assert traffic.parse_since("2026-12-01").isoformat() == "2026-12-01T00:00:00+00:00"
    assert traffic.parse_since("2026-12-01T08:00Z").hour == 8 and traffic.parse_since(None) is None
    with pytest.raises(OikyoError, match="--since"):
        traffic.parse_since("last week")
    assert traffic.parse_feedback(None) == ("positive", "corrected")
    assert traffic.parse_feedback(["corrected", "positive,corrected"]) == ("corrected", "positive")
    with pytest.raises(OikyoError, match="--feedback"):
        traffic.parse_feedback("negative")
    assert traffic.default_name("my bot!") == "my-bot-traffic"


def test_traffic_datasets_never_import_serving():
    """The data stage reads the gateway's records from the store, never through oikyo.serve (every
    import, including those inside functions, read with ast)."""
    src = Path(oikyo.__file__).parent / "data"
    bad = []
    for path in (src / "traffic.py", src / "ratings.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.name}: {n}" for n in names if n == "oikyo.serve" or n.startswith("oikyo.serve.")]
    assert bad == []


# ----------------------------------------------------------------------------- feedback with a correction


def test_record_feedback_takes_a_correction_and_refuses_bad_feedback():
    from oikyo.monitor import quality
    from oikyo.serve.gateway import request_log

    _deployment()
    rid = _request("r-1", "How do I reset it?", "Unplug it.")
    stored = request_log.record_feedback(DEPLOYMENT, rid, correction="Hold the button for 10 seconds.")
    assert stored.rating is None and stored.correction == "Hold the button for 10 seconds."
    assert quality.note_feedback(DEPLOYMENT, rid, None, corrected=True) is True  # a correction alone is negative
    with db.session() as s:
        assert s.get(ServedRequest, rid).quality == {"feedback": None, "negative_feedback": True, "corrected": True}
    both = request_log.record_feedback(DEPLOYMENT, rid, 1, "ok", correction="Better answer.")
    assert both.rating == 1 and both.correction == "Better answer."
    assert quality.note_feedback(DEPLOYMENT, rid, 1, corrected=True) is False  # the rating decides
    for bad, message in (({"correction": "  "}, "correction is empty"), ({}, "rating, a correction")):
        with pytest.raises(OikyoError, match=message):
            request_log.record_feedback(DEPLOYMENT, rid, **bad)
    with pytest.raises(request_log.UnknownResponse):
        request_log.record_feedback(DEPLOYMENT, "chatcmpl-nope", correction="x")
    # Ratings readers (the A/B report) see ratings only.
    assert [r["rating"] for r in request_log.feedback_rows(DEPLOYMENT)] == [1]


def test_the_feedback_route_takes_a_correction():
    from starlette.testclient import TestClient

    from oikyo.serve.gateway.request_log import RequestRecorder
    from oikyo.serve.gateway.router import Routing, create_router_app

    _deployment()
    rid = _request("chatcmpl-1", "How do I reset it?", "Unplug it.")
    recorder = RequestRecorder()
    app = create_router_app(DEPLOYMENT, Routing(DEPLOYMENT, [], {}, {}, {}), authenticate=lambda t: t == "key",
                            token=None, recorder=recorder)
    try:
        client = TestClient(app, headers={"Authorization": "Bearer key"})
        fixed = client.post("/v1/feedback", json={"response_id": rid, "correction": "Hold reset for 10 s."})
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["correction"] == "Hold reset for 10 s." and fixed.json()["rating"] is None
        empty = client.post("/v1/feedback", json={"response_id": rid, "correction": ""})
        assert empty.status_code == 400 and "'correction' is empty" in empty.json()["error"]["message"]
        neither = client.post("/v1/feedback", json={"response_id": rid})
        assert neither.status_code == 400 and "'correction'" in neither.json()["error"]["message"]
        unknown = client.post("/v1/feedback", json={"response_id": "chatcmpl-x", "correction": "y"})
        assert unknown.status_code == 404
        rated = client.post("/v1/feedback", json={"response_id": rid, "rating": 1})
        assert rated.status_code == 200 and rated.json()["correction"] is None
        metrics = app.state.metrics.render()[0].decode()
        assert 'oikyo_feedback_negative_total{deployment="bot",variant="mv-served"} 1.0' in metrics
    finally:
        recorder.close()
    with db.session() as s:
        assert [f.correction for f in s.scalars(select(Feedback).order_by(Feedback.id))] == ["Hold reset for 10 s.",
                                                                                            None]


# ----------------------------------------------------------------------------- the migration


def _alembic(connection, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


def test_migration_0010_upgrades_a_0009_database_and_back(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as c:
        _alembic(c, "upgrade", "0009_monitoring")
        c.execute(text("INSERT INTO feedback (deployment, response_id, rating, created_at) "
                       "VALUES ('bot', 'r-1', 1.0, '2026-12-01 00:00:00')"))
    with engine.begin() as c:
        _alembic(c, "upgrade", "0010_feedback_corrections")
    columns = {col["name"]: col for col in inspect(engine).get_columns("feedback")}
    assert "correction" in columns and columns["rating"]["nullable"]
    assert {ix["name"] for ix in inspect(engine).get_indexes("feedback")} >= {"ix_feedback_response_id"}
    with engine.begin() as c:
        assert c.execute(text("SELECT rating, correction FROM feedback")).all() == [(1.0, None)]
        c.execute(text("INSERT INTO feedback (deployment, response_id, rating, correction, created_at) "
                       "VALUES ('bot', 'r-2', NULL, 'The ideal answer.', '2026-12-01 00:00:01')"))
    with engine.begin() as c:
        _alembic(c, "downgrade", "0009_monitoring")
    assert "correction" not in {col["name"] for col in inspect(engine).get_columns("feedback")}
    with engine.begin() as c:
        assert c.execute(text("SELECT response_id, rating FROM feedback")).all() == [("r-1", 1.0)]
    engine.dispose()


# ----------------------------------------------------------------------------- the command


def _oikyo(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_command_prints_counts_and_fails_readably_when_nothing_is_usable():
    _deployment()
    _feedback(_request("r-up", "Is the shop open on Sunday? Mail me at jo@shop.io", "Yes."), 1)
    _request("r-none", "And on Monday?", "Yes.")
    done = _oikyo("data", "from-traffic", DEPLOYMENT, "--since", "1d", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["version"]["rows"] == 1 and result["report"]["dropped"]["unrated"] == 1
    assert result["report"]["pii_replaced"]["email"] == 1
    assert result["version"]["lineage"]["request_ids"] == ["r-up"]
    plain = _oikyo("data", "from-traffic", DEPLOYMENT, "--name", "again")
    assert plain.returncode == 0 and "Already stored as" in plain.stdout and "1 unrated" in plain.stdout
    nothing = _oikyo("data", "from-traffic", DEPLOYMENT, "--feedback", "corrected")
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert "Nothing usable" in nothing.stderr and "1 not_selected" in nothing.stderr
    bad = _oikyo("data", "from-traffic", DEPLOYMENT, "--since", "yesterday")
    assert bad.returncode == 2 and "--since takes" in bad.stderr and "Traceback" not in bad.stderr
    helped = _oikyo("data", "from-traffic", "--help")
    assert helped.returncode == 0 and "--log-requests" in helped.stdout and "--feedback" in helped.stdout
