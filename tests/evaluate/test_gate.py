"""Gate parsing and checking (the CLI's exit codes are tested in tests/cli/test_eval_cli.py)."""

from __future__ import annotations

import pytest

from oikyo.evaluate.gate import Condition, GateError, check_gate, gate_values, parse_gate


def test_parse_every_operator_and_spacing():
    gate = parse_gate("accuracy>=0.8, forgetting <= 0.05,delta.exact_match>0,base.loss<3e1,x==1,y!=-2.5")
    assert gate == [Condition("accuracy", ">=", 0.8), Condition("forgetting", "<=", 0.05),
                    Condition("delta.exact_match", ">", 0.0), Condition("base.loss", "<", 30.0),
                    Condition("x", "==", 1.0), Condition("y", "!=", -2.5)]


@pytest.mark.parametrize("text", ["", "accuracy", "accuracy>>0.8", "accuracy>=high", "accuracy>=0.8,",
                                  ">=0.8", "accuracy=>0.8"])
def test_bad_gates_raise_with_the_bad_part(text):
    with pytest.raises(GateError):
        parse_gate(text)


def test_all_problems_are_named_at_once():
    with pytest.raises(GateError) as caught:
        parse_gate("a>1,b?2,c>=x")
    assert "'b?2'" in str(caught.value) and "'c>=x'" in str(caught.value)


def test_check_reports_each_condition_and_fails_on_nan():
    values = gate_values({"accuracy": 0.9, "loss": float("nan")}, {"base": {"accuracy": 0.5}},
                         {"forgetting": 0.07, "perplexity_ratio": 1.1, "probe_accuracy_delta": -0.02})
    assert values["delta.accuracy"] == pytest.approx(0.4) and values["base.accuracy"] == 0.5
    outcome = check_gate(parse_gate("accuracy>=0.8,forgetting<=0.05,delta.accuracy>0.3"), values)
    assert not outcome.passed and [f["condition"] for f in outcome.failures] == ["forgetting<=0.05"]
    assert not check_gate(parse_gate("loss<10"), values).passed  # NaN never passes
    assert check_gate(parse_gate("accuracy>0.5"), values).passed


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(GateError, match="available: accuracy"):
        check_gate(parse_gate("acuracy>=0.8"), {"accuracy": 1.0})
