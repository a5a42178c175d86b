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
    requests = forgetting.open_requests()
    assert len(requests) == 2 * 22 and [r["system"] for r in requests[::22]] == [None, "You are a helpful assistant."]
    assert len({(r["id"], r["system"]) for r in requests}) == 44
    assert {r["category"] for r in requests} >= {"greeting", "complaint", "advice", "explanation", "story", "howto",
                                                 "fact", "writing"}
    assert forgetting.probe_size() == 40 + 60 + 44


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


def test_forgetting_counts_the_rise_in_degenerate_answers():
    base = {"accuracy": 0.65, "perplexity": 20.0, "degenerate": 0.02}
    # The user's case: short answers and text perplexity barely moved, open-ended answers collapsed.
    looping = forgetting.forgetting(base, {"accuracy": 0.63, "perplexity": 20.5, "degenerate": 0.52})
    assert looping["forgetting"] == pytest.approx(0.5) and looping["flagged"]
    assert looping["degenerate_increase"] == pytest.approx(0.5)
    assert (looping["base"]["degenerate"], looping["model"]["degenerate"]) == (0.02, 0.52)
    fewer = forgetting.forgetting(base, {"accuracy": 0.65, "perplexity": 20.0, "degenerate": 0.0})
    assert fewer["forgetting"] == 0 and fewer["degenerate_increase"] == pytest.approx(-0.02)
    # results stored before probe version 2: no degeneration, the larger of the other two losses
    old = forgetting.forgetting({"accuracy": 0.5, "perplexity": 20.0}, {"accuracy": 0.4, "perplexity": 20.0})
    assert old["forgetting"] == pytest.approx(0.2) and old["degenerate_increase"] is None
    assert forgetting.describe_degeneration(old) == "" and forgetting.example_lines(old) == []


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


class _FakeBackend:
    """Answers every short instruction "Paris" and every open-ended request with ``reply``; records the prompts."""

    def __init__(self, tokenizer, reply: str, finish: str = "stop"):
        self.tokenizer, self.reply, self.finish, self.open_prompts = tokenizer, reply, finish, []

    def generate(self, prompts, **kwargs):
        return ["Paris"] * len(prompts)

    def generate_results(self, prompts, *, settings, **kwargs):
        from types import SimpleNamespace

        self.open_prompts += prompts
        self.max_new_tokens = settings.max_new_tokens
        return [SimpleNamespace(text=self.reply, finish_reason=self.finish, completion_tokens=9) for _ in prompts]

    def nll(self, encoded, **kwargs):
        return [30.0] * len(encoded), [10] * len(encoded)


def test_the_probe_asks_open_requests_twice_and_shows_the_models_degenerate_answers(bundled_tokenizer):
    from oikyo.evaluate.summary import format_lines

    base_backend = _FakeBackend(bundled_tokenizer, "I'm sorry your order is late. Please contact the shop.")
    base = forgetting.run_probe(base_backend, None)
    tuned = forgetting.run_probe(_FakeBackend(bundled_tokenizer, "😡" * 40, finish="length"), "model")
    assert base["degenerate"] == 0 and tuned["degenerate"] == 1 and tuned["truncated"] == 1
    assert base_backend.max_new_tokens == forgetting.OPEN_MAX_NEW_TOKENS
    asked = [bundled_tokenizer.decode(ids) for ids in base_backend.open_prompts]
    assert len(asked) == 44 and sum("You are a helpful assistant." in p for p in asked) == 22
    assert all("Triage the customer message" not in p for p in asked)  # never the training system prompt
    assert sum("My order never arrived and I am furious" in p for p in asked) == 2
    item = tuned["open_items"][0]
    assert item["rule"] == "char_run" and item["degenerate"] and item["finish"] == "length"

    summary = forgetting.forgetting(base, tuned)
    assert summary["flagged"] and summary["forgetting"] == 1.0  # accuracy and perplexity unchanged
    examples = summary["model"]["degenerate_examples"]
    assert len(examples) == forgetting.EXAMPLES and summary["base"]["degenerate_examples"] == []
    assert examples[0]["system"] is None and examples[0]["reply"].startswith("😡😡")
    table = {"systems": [{"name": "mv-1", "forced_overlap": False}], "metrics": {}, "deltas": {}, "forgetting": summary}
    lines = format_lines(table)
    assert lines[-2 * forgetting.EXAMPLES - 2].endswith("degenerate answers 0.000 -> 1.000 (+1.000)")
    assert lines[-2 * forgetting.EXAMPLES - 1] == "degenerate answers of the model (first few):"
    assert "char_run" in lines[-2 * forgetting.EXAMPLES] and "😡😡" in lines[-2 * forgetting.EXAMPLES + 1]


def test_a_forgetting_record_stored_before_degeneration_still_displays():
    from oikyo.evaluate.summary import format_lines

    stored_v1 = {"probe_version": "1", "forgetting": 0.05, "threshold": 0.1, "flagged": False, "accuracy_drop": 0.05,
                 "perplexity_increase": 0.01, "perplexity_ratio": 1.01, "probe_accuracy_delta": -0.033,
                 "probe_accuracy_delta_ci": None,
                 "base": {"accuracy": 0.65, "perplexity": 20.0, "correct_by_category": None},
                 "model": {"accuracy": 0.617, "perplexity": 20.2, "correct_by_category": None}}
    table = {"systems": [{"name": "mv-1", "forced_overlap": False}], "metrics": {}, "deltas": {}, "forgetting": stored_v1}
    assert format_lines(table)[-1] == ("forgetting +0.050 (ok, threshold 0.1): probe accuracy 0.650 -> 0.617 (-0.033), "
                                       "perplexity ratio 1.010")


def test_a_gate_on_forgetting_sees_degeneration():
    from oikyo.evaluate.gate import check_gate, gate_values, parse_gate

    base = {"accuracy": 0.65, "perplexity": 20.0, "degenerate": 0.0}
    looping = forgetting.forgetting(base, {"accuracy": 0.65, "perplexity": 20.4, "degenerate": 0.5})
    values = gate_values({"accuracy": 0.9}, {}, looping)
    outcome = check_gate(parse_gate("forgetting<=0.05,degenerate_increase<=0.1,perplexity_ratio<=1.05"), values)
    assert [f["condition"] for f in outcome.failures] == ["forgetting<=0.05", "degenerate_increase<=0.1"]
    old = forgetting.forgetting({"accuracy": 0.65, "perplexity": 20.0}, {"accuracy": 0.65, "perplexity": 20.0})
    assert "degenerate_increase" not in gate_values({}, {}, old)  # a record without it: named as unknown


def test_oikyo_eval_prints_the_degenerate_share_and_the_models_loops(capsys):
    from oikyo.cli.evaluate import _print_forgetting

    loop = {"id": "open-complaint-01", "system": None, "prompt": "My order never arrived and I am furious!",
            "reply": "😡" * 30, "finish": "length", "tokens": 64, "degenerate": True, "rule": "char_run",
            "detail": "'😡' repeated 30 times (100% of the answer)"}
    tuned = {"accuracy": 0.62, "perplexity": 20.4, "degenerate": 0.5, "open_items": [loop]}
    summary = forgetting.forgetting({"accuracy": 0.65, "perplexity": 20.0, "degenerate": 0.0}, tuned)
    _print_forgetting(summary)
    printed = capsys.readouterr().out
    assert "FORGETTING FLAGGED" in printed and "degenerate answers 0.000 -> 0.500 (+0.500)" in printed
    assert "open-complaint-01 (no system prompt) char_run" in printed and "😡😡😡" in printed
    stored_v1 = {k: v for k, v in summary.items() if k != "degenerate_increase"}
    stored_v1["base"] = {"accuracy": 0.65, "perplexity": 20.0}
    stored_v1["model"] = {"accuracy": 0.62, "perplexity": 20.4}
    _print_forgetting(stored_v1)
    printed = capsys.readouterr().out
    assert "probe accuracy 0.650 -> 0.620" in printed and "degenerate" not in printed
