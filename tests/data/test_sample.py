"""The bundled support-ticket sample: reproducible, well-formed, learnable and small."""

from __future__ import annotations

import json
import re
from collections import Counter

from oikyo.data import sample
from oikyo.data.quality import build_report
from oikyo.data.sample import (
    CATEGORIES,
    PRIORITIES,
    SENTIMENTS,
    SYSTEM,
    generate_support_tickets,
    sample_path,
    write_sample,
)


def _shipped() -> list[dict]:
    return [json.loads(line) for line in sample_path().read_text(encoding="utf-8").splitlines()]


def test_regenerating_the_sample_gives_the_shipped_file_byte_for_byte(tmp_path):
    out = write_sample(tmp_path / "tickets.jsonl", 600, seed=0)
    assert out.read_bytes() == sample_path().read_bytes()
    assert sample_path() == sample.SAMPLE_PATH
    assert sample_path().stat().st_size < 300_000


def test_same_seed_same_records_other_seed_other_records():
    assert generate_support_tickets(50, seed=3) == generate_support_tickets(50, seed=3)
    assert generate_support_tickets(50, seed=3) != generate_support_tickets(50, seed=4)
    assert generate_support_tickets(20) == generate_support_tickets(600)[:20]


def test_every_record_is_a_chat_with_a_compact_json_answer_in_a_fixed_key_order():
    records = _shipped()
    assert len(records) == 600
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert record["messages"][0]["content"] == SYSTEM
        answer = record["messages"][2]["content"]
        parsed = json.loads(answer)
        assert list(parsed) == ["category", "priority", "sentiment"]
        assert parsed["category"] in CATEGORIES
        assert parsed["priority"] in PRIORITIES
        assert parsed["sentiment"] in SENTIMENTS
        assert answer == json.dumps(parsed)  # one canonical spelling for the model to learn


def test_the_system_prompt_states_the_format_with_every_allowed_value():
    assert '"category"' in SYSTEM and '"priority"' in SYSTEM and '"sentiment"' in SYSTEM
    for value in (*CATEGORIES, *PRIORITIES, *SENTIMENTS):
        assert value in SYSTEM


def test_messages_are_short_distinct_and_every_label_is_well_represented():
    records = _shipped()
    messages = [r["messages"][1]["content"] for r in records]
    assert len(set(messages)) == len(messages)
    for m in messages:
        sentences = len(re.findall(r"[.?!](?:\s|$)", m))
        assert 1 <= sentences <= 4 and len(m) < 220, m  # "It ships next month." adds one
    answers = [json.loads(r["messages"][2]["content"]) for r in records]
    for key, values in (("category", CATEGORIES), ("priority", PRIORITIES), ("sentiment", SENTIMENTS)):
        counts = Counter(a[key] for a in answers)
        assert set(counts) == set(values)
        assert min(counts.values()) >= 0.1 * len(records), (key, counts)


def test_priority_is_not_just_an_urgency_keyword():
    """Some high-priority messages have no urgency sentence: the severity of the issue must be read."""
    records = _shipped()
    high_urgency = tuple(sample._URGENCY["high"])
    high = [r["messages"][1]["content"] for r in records
            if json.loads(r["messages"][2]["content"])["priority"] == "high"]
    without = [m for m in high if not any(u in m for u in high_urgency)]
    assert 0.2 * len(high) <= len(without) <= 0.8 * len(high)


def test_the_sample_passes_its_own_quality_report():
    report = build_report(_shipped(), "conversations")
    assert report["duplicates"]["exact"]["count"] == 0
    assert report["pii"]["rows_with_pii"] == 0
    assert report["answers"]["empty"] == report["answers"]["short"] == 0
    assert report["turns"]["distinct_system_prompts"] == 1
