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


def _result(correct: list[bool], perplexity: float = 20.0) -> dict:
    items = [{"id": f"p{i}", "reply": "", "correct": ok} for i, ok in enumerate(correct)]
    return {"accuracy": sum(correct) / len(correct), "perplexity": perplexity, "items": items}


def test_a_small_drop_is_flagged_but_shown_within_the_probes_noise():
    # The quickstart's case: 39/60 -> 35/60, a net 4 answers lost (6 lost, 2 gained).
    base = _result([True] * 39 + [False] * 21)
    tuned_correct = [True] * 33 + [False] * 6 + [True] * 2 + [False] * 19
    summary = forgetting.forgetting(base, _result(tuned_correct))
    assert summary["flagged"] and summary["forgetting"] == pytest.approx(4 / 39)
    ci = summary["probe_accuracy_delta_ci"]
    assert ci["delta"] == pytest.approx(-4 / 60) and ci["low"] < ci["delta"] < ci["high"]
    assert ci["low"] < 0 < ci["high"] and not ci["significant"]
    assert "within the probe's noise" in forgetting.describe_change(summary)


def test_a_large_drop_is_beyond_the_probes_noise_and_unpaired_results_get_no_interval():
    base = _result([True] * 39 + [False] * 21)
    collapsed = forgetting.forgetting(base, _result([True] * 10 + [False] * 50))  # the lr 1e-3 recipe's collapse
    ci = collapsed["probe_accuracy_delta_ci"]
    assert ci["significant"] and ci["high"] < 0
    assert forgetting.describe_change(collapsed).startswith("-0.483, 95% CI [")
    assert "beyond the probe's noise" in forgetting.describe_change(collapsed)
    # results stored before items were kept, or items that do not pair up: the change alone
    old = forgetting.forgetting({"accuracy": 0.65, "perplexity": 20.0}, {"accuracy": 0.6, "perplexity": 20.0})
    assert old["probe_accuracy_delta_ci"] is None and forgetting.describe_change(old) == "-0.050"
    shuffled = _result([True] * 39 + [False] * 21)
    shuffled["items"] = shuffled["items"][::-1]
    assert forgetting.forgetting(base, shuffled)["probe_accuracy_delta_ci"] is None


def test_the_summary_line_shows_the_change_with_its_interval():
    from oikyo.evaluate.summary import format_lines

    base = _result([True] * 39 + [False] * 21)
    lost_6_gained_2 = forgetting.forgetting(base, _result([True] * 33 + [False] * 6 + [True] * 2 + [False] * 19))
    lost_4 = forgetting.forgetting(base, _result([True] * 35 + [False] * 25))
    assert lost_4["flagged"] and lost_4["probe_accuracy_delta_ci"]["significant"]  # every change one way
    summary = lost_6_gained_2
    table = {"systems": [{"name": "mv-1", "forced_overlap": False}], "metrics": {}, "deltas": {},
             "forgetting": summary}
    line = format_lines(table)[-1]
    assert line.startswith("forgetting +0.103 (FLAGGED, threshold 0.1): probe accuracy 0.650 -> 0.583 (-0.067, 95% CI [")
    assert "within the probe's noise), perplexity ratio 1.000" in line
