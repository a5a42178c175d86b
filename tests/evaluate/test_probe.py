"""The forgetting probe: shipped files equal what the build script writes; scoring and the forgetting number."""

from __future__ import annotations

import pytest

from oikyo.evaluate import forgetting
from oikyo.evaluate.probe import build


def test_the_shipped_probe_is_what_the_script_writes():
    for path, content in build.render().items():
        assert path.read_text(encoding="utf-8") == content, f"{path.name} is stale: run python -m oikyo.evaluate.probe.build"


def test_probe_size_and_categories():
    texts, items = forgetting.load_probe()
    assert len(texts) == 40 and len(items) == 60
    assert {i["category"] for i in items} == {"arithmetic", "capital", "conversion", "fact", "words"}
    assert len({i["id"] for i in items}) == 60 and all(i["answers"] for i in items)
    assert all(40 <= len(t["text"].split()) <= 80 for t in texts)


def test_arithmetic_answers_are_right():
    for prompt, (answer,) in build.arithmetic_items():
        a, op, b = prompt.removeprefix("What is ").removesuffix("?").split()
        expected = {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
        assert int(answer) == expected and expected >= 0


@pytest.mark.parametrize("reply, answers, ok", [
    ("Paris", ["paris"], True), ("The capital of France is Paris.", ["paris"], True),
    ("Parisian food", ["paris"], False), ("8 legs", ["8", "eight"], True), ("It has eight.", ["8", "eight"], True),
    ("18", ["8"], False), ("Carbon dioxide (CO2).", ["carbon dioxide", "co2"], True), ("", ["blue"], False),
])
def test_answers_match_whole_words(reply, answers, ok):
    assert forgetting.answer_correct(reply, answers) is ok


def test_forgetting_is_the_worse_relative_loss():
    base = {"accuracy": 0.5, "perplexity": 20.0}
    same = forgetting.forgetting(base, dict(base))
    assert same["forgetting"] == 0 and not same["flagged"]
    worse_acc = forgetting.forgetting(base, {"accuracy": 0.4, "perplexity": 21.0}, threshold=0.1)
    assert worse_acc["forgetting"] == pytest.approx(0.2)  # accuracy -20% beats perplexity +5%
    assert worse_acc["flagged"] and worse_acc["probe_accuracy_delta"] == pytest.approx(-0.1)
    worse_ppl = forgetting.forgetting(base, {"accuracy": 0.55, "perplexity": 30.0}, threshold=0.6)
    assert worse_ppl["forgetting"] == pytest.approx(0.5) and not worse_ppl["flagged"]
    assert worse_ppl["perplexity_ratio"] == pytest.approx(1.5)
    better = forgetting.forgetting(base, {"accuracy": 0.6, "perplexity": 19.0})
    assert better["forgetting"] < 0
    from_zero = forgetting.forgetting({"accuracy": 0.0, "perplexity": 10.0}, {"accuracy": 0.0, "perplexity": 10.0})
    assert from_zero["forgetting"] == 0
