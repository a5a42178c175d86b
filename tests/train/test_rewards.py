"""GRPO reward functions: each built-in on hand-made completions, weighted sets, user reward modules, bad config."""

from __future__ import annotations

import sys

import pytest

from oikyo.train import TrainingError, rewards
from oikyo.train.config import RewardSpec

PROMPT = [{"role": "user", "content": "Classify the ticket."}]
REF = '{"category": "billing", "priority": "high", "meta": {"lang": "en"}}'


def test_builtins_are_registered_in_the_same_registry():
    assert set(rewards.BUILTINS) == {"exact_match", "json_valid", "json_field_match", "regex_match", "length_penalty"}
    assert all(rewards.get(name) is rewards.REWARDS[name] for name in rewards.BUILTINS)


def test_exact_match():
    assert rewards.exact_match("  Paris\n", "Paris", PROMPT) == 1.0
    assert rewards.exact_match("paris.", "Paris", PROMPT) == 0.0
    assert rewards.exact_match("The paris.", "Paris", PROMPT, normalize=True) == 1.0
    assert rewards.exact_match("Paris", None, PROMPT) == 0.0


def test_json_valid():
    assert rewards.json_valid('{"a": 1}', None, PROMPT) == 1.0
    assert rewards.json_valid('```json\n{"a": 1}\n```', None, PROMPT) == 1.0
    assert rewards.json_valid("[1, 2]", None, PROMPT) == 0.0  # valid JSON, but not an object
    assert rewards.json_valid('{"a": 1', None, PROMPT) == 0.0


def test_json_field_match_is_the_share_of_reference_leaf_fields():
    assert rewards.json_field_match(REF, REF, PROMPT) == 1.0
    two_of_three = '{"category": "billing", "priority": "low", "meta": {"lang": "en"}, "extra": 1}'
    assert rewards.json_field_match(two_of_three, REF, PROMPT) == pytest.approx(2 / 3)
    assert rewards.json_field_match('{"meta": {"lang": "en"}}', REF, PROMPT) == pytest.approx(1 / 3)
    assert rewards.json_field_match("billing, high", REF, PROMPT) == 0.0
    assert rewards.json_field_match(REF, "not json", PROMPT) == 0.0  # nothing to match against
    assert rewards.json_field_match(REF, None, PROMPT) == 0.0


def test_regex_match():
    assert rewards.regex_match("Answer: 42.", None, PROMPT, pattern=r"\d+") == 1.0
    assert rewards.regex_match("Answer: 42.", None, PROMPT, pattern=r"\d+", full=True) == 0.0
    assert rewards.regex_match(" 42 ", None, PROMPT, pattern=r"\d+", full=True) == 1.0
    assert rewards.regex_match("no digits", None, PROMPT, pattern=r"\d+") == 0.0


def test_length_penalty():
    assert rewards.length_penalty("x" * 10, None, PROMPT, target=10) == 0.0
    assert rewards.length_penalty("x" * 15, None, PROMPT, target=10) == pytest.approx(-0.5)
    assert rewards.length_penalty("x" * 5, None, PROMPT, target=10) == pytest.approx(-0.5)
    assert rewards.length_penalty("x" * 5, None, PROMPT, target=10, only_longer=True) == 0.0
    assert rewards.length_penalty("x" * 100, None, PROMPT, target=10) == -1.0  # floored at -1
    assert rewards.length_penalty("abcd", "abcdefgh", PROMPT) == pytest.approx(-0.5)  # target: the reference
    assert rewards.length_penalty("abcd", None, PROMPT) == 0.0


def test_weighted_set_sums_with_weights_and_reports_each_value():
    reward_set = rewards.build([
        RewardSpec(name="json_valid", weight=2.0),
        {"name": "regex_match", "weight": 0.5, "args": {"pattern": "billing"}},
    ])
    total, parts = reward_set.score('{"category": "billing"}', REF, PROMPT)
    assert parts == {"json_valid": 1.0, "regex_match": 1.0}
    assert total == pytest.approx(2.5)
    total, parts = reward_set.score("billing", REF, PROMPT)
    assert parts == {"json_valid": 0.0, "regex_match": 1.0} and total == pytest.approx(0.5)


def test_user_reward_module(tmp_path, monkeypatch):
    (tmp_path / "my_grpo_rewards.py").write_text(
        "from oikyo.train.rewards import reward\n\n"
        "@reward('mentions_user')\n"
        "def mentions_user(completion, reference, prompt_messages, *, word='ticket'):\n"
        "    asked = prompt_messages[-1]['content'].lower()\n"
        "    return float(word in asked and word in completion.lower())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reward_set = rewards.build([{"name": "mentions_user", "args": {"word": "ticket"}}], ["my_grpo_rewards"])
        assert reward_set.score("This ticket is about billing.", None, PROMPT) == (1.0, {"mentions_user": 1.0})
        assert reward_set.score("Billing.", None, PROMPT)[0] == 0.0
        assert "mentions_user" not in rewards.BUILTINS
    finally:
        rewards.REWARDS.pop("mentions_user", None)
        sys.modules.pop("my_grpo_rewards", None)


def test_problems_are_listed_together_before_any_generation():
    with pytest.raises(TrainingError) as raised:
        rewards.build([
            {"name": "no_such_reward"},
            {"name": "regex_match"},  # pattern missing
            {"name": "regex_match", "args": {"pattern": "("}},
            {"name": "length_penalty", "args": {"tagret": 10}},
        ])
    message = str(raised.value)
    assert "unknown reward 'no_such_reward'" in message and "json_field_match" in message
    assert "missing a required argument: 'pattern'" in message
    assert "not a valid regular expression" in message
    assert "unexpected keyword argument 'tagret'" in message


def test_unimportable_module_and_bad_return_values_are_named(tmp_path, monkeypatch):
    with pytest.raises(TrainingError, match="cannot import reward module 'no_such_module_xyz'"):
        rewards.build([{"name": "json_valid"}], ["no_such_module_xyz"])

    @rewards.reward("returns_text")
    def returns_text(completion, reference, prompt_messages):
        return "good"

    @rewards.reward("raises")
    def raises(completion, reference, prompt_messages):
        raise KeyError("label")

    try:
        with pytest.raises(TrainingError, match="reward 'returns_text' returned 'good'"):
            rewards.build([{"name": "returns_text"}]).score("x", None, PROMPT)
        with pytest.raises(TrainingError, match="reward 'raises' failed: KeyError"):
            rewards.build([{"name": "raises"}]).score("x", None, PROMPT)
    finally:
        rewards.REWARDS.pop("returns_text", None)
        rewards.REWARDS.pop("raises", None)
