"""Quality signals per request: each signal on crafted answers, the schema a model version was trained
on (from its lineage), the request-log hook, the summary, and a real router + replica on a tiny model
filling the quality column and exposing the counters at /metrics."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the deployment test fixtures

from serving_fixtures import *  # noqa: E402,F401,F403
from serving_fixtures import (DEPLOYMENT, ROUTER_TOKEN, ThreadServer, _names, chat, metric_sample,  # noqa: E402
                              register_version, wait_for)

from oikyo.monitor import quality  # noqa: E402
from oikyo.serve.gateway.metrics import RouterMetrics  # noqa: E402
from oikyo.serve.gateway.request_log import RequestRecord, RequestRecorder  # noqa: E402
from oikyo.store import db  # noqa: E402
from oikyo.store.models import ServedRequest, utcnow  # noqa: E402

TICKET = '{"category": "shipping", "priority": "high", "sentiment": "negative"}'
KEYS = ["category", "priority", "sentiment"]
NORMAL = [
    "The capital of France is Paris.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens in the "
    "chloroplasts of plant cells, where chlorophyll absorbs mostly red and blue light.",
    "I'm sorry to hear your order was late! Here is what you can do: open Orders, pick the order and "
    "choose 'Report a problem'. We refund the shipping fee within two days.",
    "Sorry for the wait. Your parcel left our warehouse this morning and should arrive on Friday.",
    "I can't stress enough how much a regular sleep schedule helps. Go to bed at the same time each night.",
    "As an AI researcher, you will spend most of your time cleaning data, not training models.",
    "Here are three primes: 2, 3 and 5.\n\n1. 2 is the only even prime.\n2. 3 is odd.\n3. 5 ends in 5.",
    "日本の首都は東京です。人口は約1400万人です。",
    "```python\nprint(sum(range(10)))\n```\nThis prints 45.",
    "You can check it with `curl -s https://example.com/status`; a 200 means the service is up.",
    TICKET,
]
REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I’m sorry, but I cannot share personal information about other customers.",  # curly apostrophe
    "  As an AI language model, I do not have opinions.",
    "I cannot help with creating malware.",
    "Sorry, but I can't assist with that.",
]


# ----------------------------------------------------------------------------- signals on crafted answers


@pytest.mark.parametrize("text", NORMAL)
def test_normal_answers_raise_no_flag(text):
    signals = quality.check(text)
    assert quality.flags(signals) == [], signals
    assert signals["chars"] == len(text) and signals["empty"] is False


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_flagged_and_nothing_else(text):
    signals = quality.check(text)
    assert quality.flags(signals) == ["refusal"]


def test_a_refusal_phrase_quoted_deep_in_a_long_answer_is_not_a_refusal():
    text = "Customers often ask about limits. " * 8 + "A bot that says 'I cannot help with that' loses them."
    assert quality.REFUSAL_HEAD < text.index("I cannot help") and not quality.check(text)["refusal"]


def test_an_emoji_loop_is_degenerate_with_its_rule():
    signals = quality.check("😡" * 61, completion_tokens=61)
    assert signals["degenerate"] and signals["degenerate_rule"] == "char_run" and signals["tokens"] == 61
    assert quality.flags(signals) == ["degenerate"]


def test_a_sentence_loop_is_degenerate():
    signals = quality.check("Your order is on its way. " * 20)
    assert signals["degenerate_rule"] in ("repeated_ngram", "repeated_line")


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_answers_are_empty_not_degenerate(text):
    signals = quality.check(text)
    assert signals["empty"] and not signals["degenerate"] and quality.flags(signals) == ["empty"]


def test_json_is_judged_only_where_it_applies():
    assert quality.check("Paris.")["json_valid"] is None  # prose from a chat model is not "invalid JSON"
    assert quality.check(TICKET)["json_valid"] is True
    assert quality.check("```json\n" + TICKET + "\n```")["json_valid"] is True  # a code fence is allowed
    broken = quality.check('{"category": "shipping", "priority": ')
    assert broken["json_valid"] is False and quality.flags(broken) == ["invalid_json"]
    assert quality.check("[1, 2]")["json_valid"] is False  # an answer must be a JSON object


def test_schema_match_missing_extra_and_wrong_types():
    schema = quality.schema_from_answers([TICKET, '{"category": "billing", "priority": "low", "sentiment": "neutral"}'])
    assert schema.required == KEYS and schema.types == {k: ["string"] for k in KEYS}
    good = quality.check(TICKET, schema=schema)
    assert good["json_valid"] and good["schema_match"] and good["missing_keys"] == [] and quality.flags(good) == []
    wrong = quality.check('{"category": "billing", "priority": 3, "mood": "ok"}', schema=schema)
    assert wrong["schema_match"] is False and wrong["missing_keys"] == ["sentiment"]
    assert wrong["extra_keys"] == ["mood"] and wrong["wrong_types"] == ["priority"]
    assert quality.flags(wrong) == ["schema_mismatch"]
    assert wrong["schema_mismatch"] is True and wrong["invalid_json"] is False  # every flag is a stored boolean
    prose = quality.check("It is a shipping problem, high priority.", schema=schema)
    assert prose["json_valid"] is False and prose["missing_keys"] == KEYS
    assert quality.flags(prose) == ["invalid_json", "schema_mismatch"]


def test_prose_training_answers_give_no_schema_and_rare_keys_are_optional():
    assert quality.schema_from_answers(["Paris.", "Hello there!", TICKET]) is None
    answers = [TICKET] * 19 + ['{"category": "refund", "priority": "low", "sentiment": "neutral", "note": "x"}']
    schema = quality.schema_from_answers(answers)
    assert schema.required == KEYS and schema.optional == ["note"]
    assert quality.check('{"category": "a", "priority": "b", "sentiment": "c", "note": "d"}', schema=schema)["schema_match"]


# ----------------------------------------------------------------------------- schema from the lineage


@pytest.fixture
def support_dataset():
    from oikyo.data import sample, versions

    return versions.import_dataset(sample.sample_path(), name="support-tickets").version


def test_the_schema_of_a_model_version_comes_from_its_training_dataset(support_dataset, tmp_path):
    from oikyo.store.models import ModelVersion

    trained = register_version(tmp_path, "base")
    with db.session() as s:
        s.get(ModelVersion, trained).lineage = {"dataset_version": support_dataset.id}
    schema = quality.expected_schema(trained)
    assert schema.required == KEYS and schema.optional == [] and schema.source == support_dataset.id
    assert schema.types == {k: ["string"] for k in KEYS} and schema.answers > 10
    assert quality.expected_schema(register_version(tmp_path, "base")) is None  # no lineage: no schema
    assert quality.expected_schema("smollm2-135m-instruct") is None  # a base model


def test_a_chat_dataset_gives_no_schema(tmp_path):
    from oikyo.data import versions

    rows = tmp_path / "chat.jsonl"
    rows.write_text("\n".join(
        f'{{"messages": [{{"role": "user", "content": "q{i}"}}, {{"role": "assistant", "content": "Answer {i}."}}]}}'
        for i in range(5)) + "\n")
    assert quality.schema_for_dataset(versions.import_dataset(rows, name="chat").version) is None


# ----------------------------------------------------------------------------- the hook, feedback, summary


def _record(text: str, *, model="mv-x", variant="a", status=200, logged=False, **kwargs) -> RequestRecord:
    import secrets

    return RequestRecord(id=f"chatcmpl-{secrets.token_hex(6)}", deployment=DEPLOYMENT, variant=variant, model=model,
                         endpoint="chat", status=status, latency_s=0.1, completion_tokens=len(text.split()),
                         response=text if logged else None, text=text, **kwargs)


def _stored(record_id: str) -> ServedRequest:
    with db.session() as s:
        return s.get(ServedRequest, record_id)


def test_the_hook_checks_answers_in_the_writer_thread_and_stores_only_signals_without_logging():
    metrics = RouterMetrics(DEPLOYMENT)
    recorder = RequestRecorder(every_s=60)  # flushed by hand below
    hook = quality.RequestQuality(metrics, schema_for=lambda model: None)
    recorder.add_hook(hook)
    loop, refusal, failed = _record("😡" * 40), _record(REFUSALS[0], logged=True), _record("", status=500)
    for record in (loop, refusal, failed):
        recorder.add(record)
    recorder.close()
    stored = _stored(loop.id)
    assert stored.response is None and stored.quality["degenerate_rule"] == "char_run"  # no text kept
    assert _stored(refusal.id).quality["refusal"] and _stored(refusal.id).response == REFUSALS[0]
    assert _stored(failed.id).quality is None  # errors have no answer to check
    body = metrics.render()[0].decode()
    labels = {"deployment": DEPLOYMENT, "model": "mv-x", "variant": "a"}
    assert metric_sample(body, "oikyo_quality_checked_total", **labels) == 2.0
    assert metric_sample(body, "oikyo_quality_flags_total", **labels, signal="degenerate") == 1.0
    assert metric_sample(body, "oikyo_quality_flags_total", **labels, signal="refusal") == 1.0
    assert metric_sample(body, "oikyo_quality_flags_total", **labels, signal="invalid_json") == 0.0  # every series exists


def test_a_failing_hook_costs_no_records():
    recorder = RequestRecorder(every_s=60)
    recorder.add_hook(lambda batch: 1 / 0)
    record = _record("fine")
    recorder.add(record)
    recorder.close()
    assert _stored(record.id) is not None


def test_a_hit_token_limit_is_known_from_the_logged_params():
    record = _record(" ".join(f"word{i}" for i in range(60)) + " go on and on" * 5, logged=True)
    assert not quality.check(record.response)["degenerate"]  # a loop only in its last part
    record.request = {"messages": [], "params": {"max_tokens": record.completion_tokens}}
    quality.RequestQuality(schema_for=lambda model: None)([record])
    assert record.quality["truncated"] and record.quality["degenerate_rule"] == "truncated_loop"


def _store(records: list[RequestRecord]) -> None:
    recorder = RequestRecorder(every_s=60)
    recorder.add_hook(quality.RequestQuality(schema_for=lambda model: None))
    for record in records:
        recorder.add(record)
    recorder.close()


def test_feedback_is_noted_with_the_request_and_the_scale_is_read_from_the_ratings():
    from oikyo.serve.gateway.request_log import record_feedback

    records = [_record("Paris."), _record("Lyon."), _record("Nice.")]
    _store(records)
    record_feedback(DEPLOYMENT, records[0].id, -1)
    assert quality.note_feedback(DEPLOYMENT, records[0].id, -1) is True
    assert _stored(records[0].id).quality["negative_feedback"] and _stored(records[0].id).quality["chars"] == 6
    record_feedback(DEPLOYMENT, records[1].id, 1)
    assert quality.note_feedback(DEPLOYMENT, records[1].id, 1) is False  # thumbs up
    record_feedback(DEPLOYMENT, records[2].id, 5)
    quality.note_feedback(DEPLOYMENT, records[2].id, 5)
    record_feedback(DEPLOYMENT, records[1].id, 1)
    assert quality.note_feedback(DEPLOYMENT, records[1].id, 1) is True  # one star, now that stars are in use


def test_summary_gives_shares_per_variant_within_the_window():
    old = _record("😡" * 40, variant="b")
    old.created_at = utcnow() - timedelta(hours=2)
    records = [_record("Paris."), _record(REFUSALS[0]), _record("😡" * 40), _record("", variant="a"),
               _record("Fine.", variant="b"), _record("oops", variant="b", status=500), old]
    _store(records)
    quality.note_feedback(DEPLOYMENT, records[0].id, -1)
    got = quality.summary(DEPLOYMENT, window_s=3600)
    assert set(got) == {"a", "b"}
    a, b = got["a"], got["b"]
    assert a["checked"] == 4 and a["refusal_share"] == 0.25 and a["degenerate_share"] == 0.25
    assert a["empty_share"] == 0.25 and a["invalid_json_share"] == 0.0 and a["schema_mismatch_share"] == 0.0
    assert a["rated"] == 1 and a["negative_feedback_share"] == 1.0
    assert b["checked"] == 1 and b["degenerate_share"] == 0.0 and b["negative_feedback_share"] is None
    assert quality.summary(DEPLOYMENT, window_s=3 * 3600)["b"]["checked"] == 2
    assert quality.summary("other") == {}


# ----------------------------------------------------------------------------- end to end: router + replica


@pytest.fixture(params=[True, False], ids=["logged", "not-logged"])
def quality_router(request, api_engine, api_model_dir, api_adapter_dirs, support_dataset):
    """A router over one in-process replica: variant "support" trained on support tickets (JSON answers)
    and variant "chat" (no lineage), with or without request logging."""
    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.ab import Variant
    from oikyo.serve.gateway.httpapi import shared_token, store_keys
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.replicas import PoolSpec, StaticPool
    from oikyo.serve.gateway.router import Routing, create_router_app
    from oikyo.serve.gateway.served_models import ModelSpec
    from oikyo.store.models import ModelVersion

    load_dir = str(api_model_dir)
    mvs = {name: register_version(path, load_dir) for name, path in api_adapter_dirs.items()}
    with db.session() as s:
        s.get(ModelVersion, mvs["support"]).lineage = {"dataset_version": support_dataset.id}
    names = _names(api_model_dir)
    replica = ThreadServer(create_replica_app(api_engine, names, authenticate=shared_token(ROUTER_TOKEN),
                                              blocking_auth=False))
    specs = [ModelSpec(id=mv, kind="adapter", load_dir=load_dir, adapter_dir=None, base_model=load_dir)
             for mv in mvs.values()]
    variants = [Variant(label="support", model=mvs["support"], weight=50.0),
                Variant(label="chat", model=mvs["sales"], weight=50.0)]
    pool = StaticPool(PoolSpec(name=specs[0].id, load_dir=load_dir, models=specs), [replica.url])
    routing = Routing(DEPLOYMENT, variants, {load_dir: pool}, {v.label: load_dir for v in variants}, {load_dir: names})
    app = create_router_app(DEPLOYMENT, routing, authenticate=store_keys(), token=ROUTER_TOKEN,
                            log_requests=request.param)
    router = ThreadServer(app)
    _, secret = keys.create("test")
    yield Served(router.url, secret, api_engine, app), mvs, request.param
    router.stop()
    replica.stop()


def test_a_router_fills_the_quality_column_and_exposes_the_counters(quality_router):
    served, mvs, logged = quality_router
    client = served.client()
    support = chat(client, "support", "My parcel never arrived!", max_tokens=10)
    streamed = list(chat(client, "chat", "Hi", max_tokens=8, stream=True))
    stored = wait_for(lambda: _stored(support.id) if _stored(support.id) and _stored(support.id).quality else None)
    signals = stored.quality
    text = support.choices[0].message.content
    assert (stored.response == text) if logged else stored.response is None
    # The tiny random model does not write tickets: the support variant's answer misses every key.
    assert signals["chars"] == len(text) and signals["tokens"] == support.usage.completion_tokens
    assert signals["json_valid"] is False and signals["schema_match"] is False and signals["missing_keys"] == KEYS
    hit_limit = logged and support.usage.completion_tokens >= 10  # max_tokens is known from the logged request
    assert signals == quality.check(text, completion_tokens=signals["tokens"], truncated=hit_limit,
                                    schema=quality.expected_schema(mvs["support"]))
    chat_id = streamed[0].id
    other = wait_for(lambda: _stored(chat_id) if _stored(chat_id) and _stored(chat_id).quality else None)
    assert other.quality["schema_match"] is None  # no JSON training answers: no schema to match

    headers = {"Authorization": f"Bearer {served.key}"}
    feedback = httpx.post(f"{served.url}/v1/feedback", json={"response_id": support.id, "rating": -1}, headers=headers)
    assert feedback.status_code == 200
    assert _stored(support.id).quality["negative_feedback"] is True
    body = httpx.get(f"{served.url}/metrics", headers=headers).text
    support_labels = {"deployment": DEPLOYMENT, "model": mvs["support"], "variant": "support"}
    assert metric_sample(body, "oikyo_quality_checked_total", **support_labels) == 1.0
    assert metric_sample(body, "oikyo_quality_flags_total", **support_labels, signal="schema_mismatch") == 1.0
    assert metric_sample(body, "oikyo_quality_flags_total", **support_labels, signal="invalid_json") == 1.0
    assert metric_sample(body, "oikyo_quality_flags_total", **support_labels, signal="refusal") == 0.0
    assert metric_sample(body, "oikyo_quality_checked_total", deployment=DEPLOYMENT, model=mvs["sales"], variant="chat") == 1.0
    assert metric_sample(body, "oikyo_feedback_negative_total", deployment=DEPLOYMENT, variant="support") == 1.0
    assert quality.summary(DEPLOYMENT)["support"]["schema_mismatch_share"] == 1.0
