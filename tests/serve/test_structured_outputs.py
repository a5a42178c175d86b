"""response_format json_object / json_schema: decoding constrained by llguidance, through the official client.

The tiny model has random weights, so without the grammar its text is never JSON; with it, every
answer must parse and follow the schema (types, enums, required keys, no extra keys). The slow
test asks the real bundled model to triage tickets of the bundled support-ticket task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import BASE_ID

from oikyo.serve.engine.grammar import GrammarError, json_grammar

TICKET = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "technical", "account", "shipping", "refund"]},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "urgent": {"type": "boolean"},
        "order": {"type": "integer", "minimum": 0, "maximum": 99999},
        "note": {"type": "string", "maxLength": 12},
    },
    "required": ["category", "priority", "urgent", "order", "note"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}}


def _follows_ticket_schema(text: str) -> bool:
    value = json.loads(text)
    return (set(value) == set(TICKET["required"]) and value["category"] in TICKET["properties"]["category"]["enum"]
            and value["priority"] in ("low", "medium", "high") and isinstance(value["urgent"], bool)
            and isinstance(value["order"], int) and 0 <= value["order"] <= 99999
            and isinstance(value["note"], str) and len(value["note"]) <= 12)


def test_every_sampled_answer_follows_the_schema(replica):
    client = replica.client()
    texts = []
    for seed in (1, 2):
        response = client.chat.completions.create(
            model=BASE_ID, messages=[{"role": "user", "content": "Triage: my parcel never came."}],
            response_format=FORMAT, n=6, temperature=1.0, seed=seed, max_tokens=120)
        assert {c.finish_reason for c in response.choices} == {"stop"}  # ended by the grammar, not the budget
        texts += [c.message.content for c in response.choices]
    assert all(_follows_ticket_schema(t) for t in texts), texts
    assert len(set(texts)) > 6  # sampled, not one forced answer
    plain = client.chat.completions.create(model=BASE_ID, messages=[{"role": "user", "content": "Triage"}],
                                           max_tokens=30, temperature=1.0, seed=1)
    with pytest.raises(ValueError):  # the same model without the grammar: not JSON
        json.loads(plain.choices[0].message.content)


def test_json_object_streamed_and_on_completions(replica):
    # json_object bounds nothing, and a random model never closes a string by chance (one token of
    # 49k): a logit_bias on the closing tokens makes it end, so this also checks bias + grammar together.
    client = replica.client()
    closing = {str(replica.engine.tokenizer.convert_tokens_to_ids(t)): 15 for t in ('"', "}", '"}')}
    chunks = list(client.chat.completions.create(
        model=BASE_ID, messages=[{"role": "user", "content": "Reply in JSON"}], response_format={"type": "json_object"},
        n=4, temperature=1.0, seed=3, max_tokens=100, stream=True, logit_bias=closing))
    texts, reasons = ["", "", "", ""], {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert set(reasons.values()) == {"stop"}, (texts, reasons)
    assert all(isinstance(json.loads(text), dict) for text in texts), texts
    completion = client.completions.create(model=BASE_ID, prompt="A ticket:", max_tokens=120, n=4, temperature=1.0,
                                           seed=5, extra_body={"response_format": FORMAT})
    assert all(_follows_ticket_schema(c.text) for c in completion.choices)


def test_invalid_schemas_are_refused_before_generation():
    with pytest.raises(GrammarError):
        json_grammar({"type": "objectx"})
    with pytest.raises(GrammarError):
        json_grammar(["not", "a", "schema"])
    assert json_grammar(TICKET)


@pytest.mark.slow
def test_bundled_model_triages_bundled_tickets_as_valid_json(bundled_model_dir):
    from oikyo.models.chat_template import encode_prompt
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    samples = Path(__file__).parents[2] / "src/oikyo/data/samples/support_tickets.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()[:3]]
    schema = {"type": "object", "additionalProperties": False, "required": ["category", "priority", "sentiment"],
              "properties": {"category": {"enum": ["billing", "technical", "account", "shipping", "refund"]},
                             "priority": {"enum": ["low", "medium", "high"]},
                             "sentiment": {"enum": ["positive", "neutral", "negative"]}}}
    engine = GenerationEngine(bundled_model_dir, max_batch_size=3, num_threads=1)
    grammar = json_grammar(schema)
    prompts = [encode_prompt(engine.tokenizer, row["messages"][:2]) for row in rows]
    results = engine.generate([GenerationRequest(p, max_new_tokens=60, grammar=grammar) for p in prompts])
    answers = [json.loads(r.text) for r in results]
    for answer, result in zip(answers, results):
        assert result.finish_reason == "stop"
        assert set(answer) == {"category", "priority", "sentiment"}
        assert answer["category"] in schema["properties"]["category"]["enum"]
        assert answer["priority"] in ("low", "medium", "high")
        assert answer["sentiment"] in ("positive", "neutral", "negative")
