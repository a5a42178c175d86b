"""A/B testing: split weights and stickiness, variant tags, feedback, request logging and the report's numbers."""

from __future__ import annotations

import math
import random

import httpx
import numpy as np
import openai
import pytest
from scipy import stats
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import DEPLOYMENT, chat

from oikyo.errors import OikyoError
from oikyo.serve.gateway import ab, request_log

# ----------------------------------------------------------------------------- splitting


def test_parse_split():
    assert ab.parse_split("mv-a=90, mv-b=10") == [("mv-a", 90.0), ("mv-b", 10.0)]
    assert ab.parse_split("base=0.5,mv-x=1.5") == [("base", 0.5), ("mv-x", 1.5)]
    for bad in ("", "mv-a", "mv-a=x", "mv-a=1,mv-a=2", "a=0,b=0"):
        with pytest.raises(OikyoError):
            ab.parse_split(bad)


def test_shares_follow_the_weights_within_binomial_tolerance():
    variants = [ab.Variant("a", "a", 90), ab.Variant("b", "b", 10)]
    users = 5000
    chosen = [ab.choose(variants, f"user-{i}", salt="bot").label for i in range(users)]
    share = chosen.count("b") / users
    sigma = math.sqrt(0.1 * 0.9 / users)
    assert abs(share - 0.1) < 4 * sigma
    # Without a user the choice is random with the same weights.
    rng = random.Random(0)
    anonymous = [ab.choose(variants, None, salt="bot", rng=rng).label for _ in range(users)]
    assert abs(anonymous.count("b") / users - 0.1) < 4 * sigma
    three = [ab.Variant("a", "a", 1), ab.Variant("b", "b", 1), ab.Variant("c", "c", 2)]
    picks = [ab.choose(three, f"u{i}", salt="s").label for i in range(users)]
    for label, p in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert abs(picks.count(label) / users - p) < 4 * math.sqrt(p * (1 - p) / users)


def test_the_same_user_always_gets_the_same_variant():
    variants = [ab.Variant("a", "a", 50), ab.Variant("b", "b", 50)]
    for i in range(200):
        first = ab.choose(variants, f"user-{i}", salt="bot")
        assert all(ab.choose(variants, f"user-{i}", salt="bot") == first for _ in range(3))
    assert ab.choose([ab.Variant("only", "only", 0.0001)], None, salt="x").label == "only"
    assert all(ab.choose([ab.Variant("a", "a", 0), ab.Variant("b", "b", 1)], f"u{i}", "s").label == "b"
               for i in range(100))


# ----------------------------------------------------------------------------- through the router


def test_router_tags_responses_and_keeps_users_sticky(routed, versions):
    client = routed.client()
    seen: dict[str, str] = {}
    for i in range(24):
        user = f"user-{i % 8}"
        raw = client.chat.completions.with_raw_response.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0, user=user)
        body = raw.parse()
        variant = raw.headers["x-oikyo-variant"]
        assert variant in versions.values()
        assert body.model_extra["variant"] == variant and body.model == variant
        assert seen.setdefault(user, variant) == variant
        assert variant == ab.choose([ab.Variant(v, v, 50) for v in versions.values()], user, DEPLOYMENT).label
    assert set(seen.values()) == set(versions.values())  # 8 users at 50/50: both variants in use
    # X-User-Id decides like the user field; streamed chunks carry the variant too.
    header_client = routed.client(default_headers={"X-User-Id": "user-3"})
    chunks = list(chat(header_client, DEPLOYMENT, max_tokens=3, stream=True))
    assert {c.model_extra["variant"] for c in chunks} == {seen["user-3"]}
    # Naming a variant directly routes there.
    direct = client.chat.completions.with_raw_response.create(
        model=versions["sales"], messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert direct.headers["x-oikyo-variant"] == versions["sales"]


def test_router_errors_are_openai_shaped_and_metrics_need_a_key(routed):
    with pytest.raises(openai.NotFoundError):
        chat(routed.client(), "nope")
    with pytest.raises(openai.BadRequestError) as caught:
        chat(routed.client(), DEPLOYMENT, temperature=9)
    assert caught.value.response.json()["error"]["param"] == "temperature"
    assert httpx.get(f"{routed.url}/metrics").status_code == 401
    assert httpx.get(f"{routed.url}/health").status_code == 200
    assert list(chat(routed.client(), DEPLOYMENT, stream=True, max_tokens=3))  # read to the end
    metrics = httpx.get(f"{routed.url}/metrics", headers={"Authorization": f"Bearer {routed.key}"}).text
    assert 'oikyo_requests_total{deployment="bot"' in metrics
    assert "oikyo_time_to_first_token_seconds_bucket" in metrics and "oikyo_output_tokens_total" in metrics
    assert 'kind="client"' in metrics  # the 400 was counted as a client error


def test_feedback_logging_and_export_as_a_dataset(routed, tmp_path):
    from oikyo.data import versions as data_versions

    client = routed.client()
    answers = [chat(client, DEPLOYMENT, content=f"Question {i}?", max_tokens=5, user=f"u{i}") for i in range(3)]
    streamed = list(chat(client, DEPLOYMENT, content="Streamed?", max_tokens=5, stream=True, user="u9"))
    auth = {"Authorization": f"Bearer {routed.key}"}
    given = httpx.post(f"{routed.url}/v1/feedback", json={"response_id": answers[0].id, "rating": 1,
                                                          "comment": "good"}, headers=auth)
    assert given.status_code == 200 and given.json()["variant"] == answers[0].model
    assert httpx.post(f"{routed.url}/v1/feedback", json={"response_id": "chatcmpl-nope", "rating": 1},
                      headers=auth).status_code == 404
    assert httpx.post(f"{routed.url}/v1/feedback", json={"response_id": answers[0].id, "rating": 9},
                      headers=auth).status_code == 400
    routed.app.state.recorder.flush()
    logged = request_log.logged_requests(DEPLOYMENT)
    assert len(logged) == 4
    by_id = {r.id: r for r in logged}
    assert by_id[answers[1].id].request["messages"] == [{"role": "user", "content": "Question 1?"}]
    assert by_id[answers[1].id].response == answers[1].choices[0].message.content
    assert by_id[answers[1].id].completion_tokens == 5 and by_id[answers[1].id].latency_s > 0
    stream_row = by_id[streamed[0].id]
    assert stream_row.stream and stream_row.response == "".join(c.choices[0].delta.content or "" for c in streamed
                                                                 if c.choices)
    assert stream_row.ttft_s is not None and stream_row.ttft_s <= stream_row.latency_s
    path = tmp_path / "traffic.jsonl"
    assert request_log.export_logged_requests(DEPLOYMENT, path) == 4
    assert request_log.export_logged_requests(DEPLOYMENT, tmp_path / "good.jsonl", min_rating=1) == 1
    outcome = data_versions.import_dataset(path, name="traffic")
    assert outcome.version.rows == 4 and outcome.result.format == "openai"


# ----------------------------------------------------------------------------- the report


def _seed(labels_ratings: dict, latencies: dict, errors: dict) -> tuple[list, list]:
    requests, ratings = [], []
    for label, values in latencies.items():
        requests += [{"variant": label, "status": 200, "latency_s": v, "ttft_s": v / 10} for v in values]
        requests += [{"variant": label, "status": 500, "latency_s": 0.01, "ttft_s": None}] * errors[label]
        requests += [{"variant": label, "status": 400, "latency_s": 0.01, "ttft_s": None}]  # not an error
    for label, values in labels_ratings.items():
        ratings += [{"variant": label, "rating": r} for r in values]
    return requests, ratings


def test_report_numbers_on_seeded_feedback():
    rng = np.random.default_rng(0)
    good = [1.0] * 40 + [0.0] * 5 + [-1.0] * 5
    bad = [1.0] * 20 + [0.0] * 10 + [-1.0] * 20
    lat_a, lat_b = list(rng.uniform(0.5, 1.5, 60)), list(rng.uniform(0.7, 2.0, 40))
    requests, ratings = _seed({"a": good, "b": bad}, {"a": lat_a, "b": lat_b}, {"a": 1, "b": 6})
    report = ab.summarize(["a", "b"], requests, ratings)
    a, b = report["variants"]
    assert (a["requests"], a["errors"], b["requests"], b["errors"]) == (62, 1, 47, 6)
    assert a["error_rate"] == pytest.approx(1 / 62)
    assert a["latency_p50_s"] == pytest.approx(np.percentile(lat_a, 50))
    assert b["latency_p95_s"] == pytest.approx(np.percentile(lat_b, 95))
    assert a["feedback_mean"] == pytest.approx(np.mean(good)) and b["feedback_count"] == 50
    low, high = stats.t.interval(0.95, len(bad) - 1, loc=np.mean(bad), scale=stats.sem(bad))
    assert b["feedback_ci95"] == pytest.approx((low, high))
    p, n, z = 6 / 47, 47, 1.959964  # Wilson interval by its formula
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert b["error_rate_ci95"] == pytest.approx((centre - half, centre + half))
    [comparison] = report["comparisons"]
    assert comparison["feedback"]["p_value"] == pytest.approx(stats.ttest_ind(bad, good, equal_var=False).pvalue)
    assert comparison["feedback"]["p_value"] < 0.05 and report["significant"]
    assert "significant difference" in report["verdict"] and "rated lower" in report["verdict"]
    assert comparison["error_rate"]["p_value"] == pytest.approx(stats.fisher_exact([[6, 41], [1, 61]]).pvalue)


def test_report_says_no_difference_or_not_enough_data():
    same = [1.0, 0.0, 1.0, -1.0, 1.0, 0.0] * 5
    requests, ratings = _seed({"a": same, "b": list(reversed(same))}, {"a": [1.0] * 5, "b": [1.0] * 5},
                              {"a": 0, "b": 0})
    report = ab.summarize(["a", "b"], requests, ratings)
    assert not report["significant"] and "no significant difference" in report["verdict"]
    sparse = ab.summarize(["a", "b"], requests, [{"variant": "a", "rating": 1.0}])
    assert not sparse["significant"] and "not enough feedback" in sparse["verdict"]
    assert ab.summarize(["a"], requests, ratings)["verdict"].startswith("only one variant")


def test_report_of_a_recorded_deployment(workspace, versions):
    from oikyo.serve.gateway import deployments
    from oikyo.store import db
    from oikyo.store.models import Deployment, utcnow

    a, b = versions["support"], versions["sales"]
    with db.session() as s:
        s.add(Deployment(name="exp", model=a, variants=[{"label": a, "model": a, "weight": 90},
                                                       {"label": b, "model": b, "weight": 10}],
                         host="127.0.0.1", port=1, settings={}, state="stopped", created_at=utcnow()))
    recorder = request_log.RequestRecorder()
    for i in range(10):
        variant = a if i < 7 else b
        recorder.add(request_log.RequestRecord(id=f"r{i}", deployment="exp", variant=variant, model=variant,
                                               endpoint="chat", status=200, latency_s=0.1 * (i + 1)))
    recorder.close()
    for i, rating in enumerate([5, 4, 5, 5, 4, 5, 4, 2, 1, 2]):
        request_log.record_feedback("exp", f"r{i}", rating)
    with pytest.raises(OikyoError):
        request_log.record_feedback("exp", "r-missing", 3)
    report = ab.report("exp")
    assert report["weights"] == {a: 90, b: 10}
    assert [v["requests"] for v in report["variants"]] == [7, 3]
    assert report["variants"][1]["feedback_mean"] == pytest.approx(5 / 3)
    assert report["significant"]
    assert deployments.get("exp").state == "stopped"
