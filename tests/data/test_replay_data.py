"""The shipped replay set (oikyo/data/replay/general.jsonl) and its builder's filters.

The file must load, hold OpenAI-style conversations with a provenance header, stay small, and never
contain a forgetting-probe prompt (or a near copy of one): replaying the probe's prompts would train
on the probe and hide forgetting. The builder's degenerate-answer filter and its trimming of cut
answers are checked on crafted answers (no model needed).
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import pytest

from oikyo.data.replay import NOTICE_FILE, SHIPPED_FILE, load_replay, read_shipped
from oikyo.data.replay.build import degenerate_reason, trim_truncated
from oikyo.data.replay.prompts import prompts

PROBE_DIR = Path(__file__).resolve().parents[2] / "src" / "oikyo" / "evaluate" / "probe"
NEAR = 0.9  # a normalized similarity ratio at or above this counts as the same prompt


def _normalize(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _strings(value) -> list[str]:
    """Every string that could be a prompt in a probe row: prompt/question/instruction fields and message contents."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("prompt", "question", "instruction", "content") and isinstance(item, str):
                found.append(item)
            elif isinstance(item, (dict, list)):
                found.extend(_strings(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_strings(item))
    return found


def probe_prompts() -> list[str]:
    """The prompts of every probe data file (instructions and any open-ended prompts added beside them)."""
    texts = []
    for path in sorted(PROBE_DIR.glob("*.jsonl")) + sorted(PROBE_DIR.glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(_strings(json.loads(line)))
    return texts


def _overlaps(candidates: list[str], probe: list[str]) -> list[tuple[str, str]]:
    probe_norm = [_normalize(p) for p in probe]
    hits = []
    for text in candidates:
        mine = _normalize(text)
        for theirs in probe_norm:
            matcher = difflib.SequenceMatcher(None, mine, theirs)
            if mine == theirs or (matcher.real_quick_ratio() >= NEAR and matcher.ratio() >= NEAR):
                hits.append((text, theirs))
    return hits


# ----------------------------------------------------------------------------- the shipped file


def test_the_shipped_file_loads_with_provenance_and_the_expected_shape():
    header, rows = read_shipped()
    assert SHIPPED_FILE.stat().st_size < 1_000_000
    assert header["rows"] == len(rows) >= 200
    assert "SmolLM2-135M-Instruct" in header["answers"] and "Apache-2.0" in header["licence"]
    assert NOTICE_FILE.is_file() and "Apache" in NOTICE_FILE.read_text()
    systems = 0
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"]), roles
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in row["messages"])
        assert degenerate_reason(row["messages"][-1]["content"]) is None
        systems += roles[0] == "system"
    assert 0.2 * len(rows) < systems < 0.9 * len(rows)  # with and without a system prompt
    replay = load_replay(None)
    assert replay.rows == rows and replay.lineage["source"] == "shipped" and len(replay.lineage["sha256"]) == 64


def test_every_shipped_row_answers_one_of_the_authored_prompts():
    _, rows = read_shipped()
    authored = {(p["system"], p["prompt"]) for p in prompts()}
    for row in rows:
        messages = row["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        assert (system, messages[-2]["content"]) in authored


def test_no_replay_prompt_equals_or_nearly_equals_a_probe_prompt():
    probe = probe_prompts()
    assert len(probe) >= 60, f"found only {len(probe)} probe prompts in {PROBE_DIR}: the check would be empty"
    _, rows = read_shipped()
    shipped = [m["content"] for row in rows for m in row["messages"] if m["role"] == "user"]
    authored = [p["prompt"] for p in prompts()]
    assert _overlaps(shipped + authored, probe) == []


def test_the_overlap_check_catches_copies_and_near_copies():
    probe = ["What is the capital of France? Answer with just the answer."]
    assert _overlaps(["what is the capital of france? answer with just the answer"], probe)
    assert _overlaps(["What is the capital of France?  Answer with just the answer!!"], probe)
    assert _overlaps(["What is the capital of Frances? Answer with just the answer."], probe)
    assert not _overlaps(["Can you explain how a rainbow forms in simple terms?"], probe)


# ----------------------------------------------------------------------------- the builder's filters


@pytest.mark.parametrize("answer, reason", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("Yes.", "too_short"),
    ("😀" * 60, "not_language"),
    ("🙂🙂🙂 !!! ### $$$ %%% ^^^ &&& *** ((( )))", "not_language"),
    ("a" * 80 + " is the answer", "not_language"),
    ("Here is my answer for you.\n" * 5, "repeated_line"),
    ("The compass uses a needle to find north. It is useful. The compass uses a needle to find north.",
     "repeated_sentence"),
    ("you should go to the shop " * 12, "repeated_ngram"),
])
def test_degenerate_answers_are_named(answer, reason):
    assert degenerate_reason(answer) == reason


@pytest.mark.parametrize("answer", [
    "A rainbow forms when sunlight passes through raindrops, which bend and split the light into colors.",
    "Here are five fruits:\n1. Oranges\n2. Kiwis\n3. Strawberries\n4. Lemons\n5. Papayas",
    "Hello! I'm doing well, thank you.",
    "猫はとても可愛い動物です。毎日一緒に遊びます。",
    "Sure! First, boil water. Then add the egg. Boil it for nine minutes, then cool it in cold water.",
])
def test_normal_answers_are_kept(answer):
    assert degenerate_reason(answer) is None


def test_cut_answers_are_trimmed_to_their_last_complete_sentence():
    assert trim_truncated("Sleep helps the body rest. It also helps memory. During deep sl") == (
        "Sleep helps the body rest. It also helps memory.")
    assert trim_truncated("Tips:\n1. Drink water\n2. Sleep early\n3. Wal") == "Tips:\n1. Drink water\n2. Sleep early"
    assert trim_truncated("The best way to start is to") == ""
    assert trim_truncated('He said "stop." Then he left and never') == 'He said "stop."'
