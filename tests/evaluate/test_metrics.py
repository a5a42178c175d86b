"""Every built-in metric against values computed by hand, edge cases included; the registry and user metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oikyo.evaluate import metrics
from oikyo.evaluate.metrics import METRICS, Scored


def score(name: str, predictions: list[str], references: list[str]) -> Scored:
    return METRICS[name].score(predictions, references)


def assert_consistent(name: str, result: Scored) -> None:
    """The value is what the metric's aggregate gives from the summed per-example statistics."""
    n = result.stats.shape[0]
    assert METRICS[name].aggregate(result.stats.sum(0), n) == pytest.approx(result.value, nan_ok=True)


# ----------------------------------------------------------------------------- loss and perplexity


def test_loss_and_perplexity_are_token_weighted():
    result = METRICS["loss"].fn([2.0, 4.0], [1, 3])
    assert result.value == pytest.approx(6.0 / 4)  # not the mean of per-example losses (2.0 and 1.333)
    assert result.scores == pytest.approx([2.0, 4.0 / 3])
    ppl = METRICS["perplexity"].fn([2.0, 4.0], [1, 3])
    assert ppl.value == pytest.approx(math.exp(1.5))
    assert_consistent("loss", result)
    assert_consistent("perplexity", ppl)
    assert not METRICS["loss"].higher_is_better and not METRICS["perplexity"].higher_is_better


def test_loss_of_an_example_without_tokens_is_none():
    result = METRICS["loss"].fn([0.0, 3.0], [0, 2])
    assert result.scores[0] is None and result.value == pytest.approx(1.5)


# ----------------------------------------------------------------------------- matches


def test_exact_match_ignores_only_surrounding_whitespace():
    assert score("exact_match", [" Paris \n", "paris", ""], ["Paris", "Paris", ""]).scores == [1.0, 0.0, 1.0]


def test_normalized_exact_match_folds_case_punctuation_articles_and_unicode():
    preds = ["The Paris!", "Straße — café", "an apple", "", "ﬁve"]
    refs = ["paris", "STRASSE café", "Apple.", "", "five"]  # ß casefolds to ss; the ligature NFKC-normalizes
    assert score("normalized_exact_match", preds, refs).scores == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert metrics.normalize_answer("  Hello,   WORLD! ") == "hello world"


def test_token_f1_squad_style():
    # pred tokens [cat, sat]; ref [cat, sat, down]: precision 1, recall 2/3 -> F1 0.8
    assert score("token_f1", ["the cat sat"], ["a cat sat down"]).value == pytest.approx(0.8)
    # repeated tokens count with multiplicity: pred [a? no] -> [x, x, y], ref [x, y, y]: common x1 + y1 = 2
    assert score("token_f1", ["x x y"], ["x y y"]).value == pytest.approx(2 / 3)
    result = score("token_f1", ["", "", "word"], ["", "something", "other"])
    assert result.scores == [1.0, 0.0, 0.0]  # both empty match; one empty or nothing shared: 0
    assert score("token_f1", ["naïve café"], ["Naïve Café!"]).value == 1.0


# ----------------------------------------------------------------------------- labels


def test_accuracy_and_macro_f1_on_a_label_set():
    preds = ["Yes", "no", "maybe", "yes."]
    refs = ["yes", "no", "no", "no"]
    acc = score("accuracy", preds, refs)
    assert acc.value == pytest.approx(0.5) and acc.scores == [1.0, 1.0, 0.0, 0.0]
    f1 = score("macro_f1", preds, refs)
    # yes: tp 1, fp 1 (row 4), fn 0 -> 2/3; no: tp 1, fp 0, fn 2 ("maybe" is outside the set) -> 1/2
    assert f1.value == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert_consistent("macro_f1", f1)
    assert_consistent("accuracy", acc)


def test_macro_f1_matches_scikit_learn_and_one_class_labels():
    from sklearn.metrics import f1_score

    refs = ["a", "b", "c", "a", "b", "c", "a"]
    preds = ["a", "c", "c", "b", "b", "x", "a"]
    expected = f1_score(refs, [p if p in "abc" else "other" for p in preds], labels=["a", "b", "c"], average="macro")
    assert score("macro_f1", preds, refs).value == pytest.approx(expected)
    one = score("macro_f1", ["yes", "no", "yes"], ["yes", "yes", "yes"])
    assert one.value == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))  # tp 2, fn 1: F1 = 0.8
    assert score("accuracy", ["yes", "no", "yes"], ["yes", "yes", "yes"]).value == pytest.approx(2 / 3)


def test_label_set_detection():
    prof = metrics.profile(["positive", "negative", "positive", "Negative", "neutral", "positive"])
    assert prof.label_set == ["negative", "neutral", "positive"]
    assert "accuracy" in metrics.auto_metrics(prof) and "bleu" not in metrics.auto_metrics(prof)
    free = metrics.profile([f"answer number {i}" for i in range(30)])
    assert free.label_set is None and "rougeL" in metrics.auto_metrics(free)
    labelled = metrics.profile(["a", "b", "c"], labels=["a", "b", "c"])  # the label column decides
    assert labelled.label_set == ["a", "b", "c"]
    many = metrics.profile([f"l{i % 25}" for i in range(100)])  # 25 distinct: more than 20, not a label set
    assert many.label_set is None


# ----------------------------------------------------------------------------- BLEU and ROUGE


def test_bleu_equals_sacrebleu_and_its_statistics_reproduce_it():
    import sacrebleu

    preds = ["the cat sat on the mat", "hello there", "a completely different sentence here"]
    refs = ["the cat sat on a mat", "hello world", "a different sentence is here"]
    result = score("bleu", preds, refs)
    assert result.value == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert_consistent("bleu", result)
    assert score("bleu", ["same words here too"], ["same words here too"]).value == pytest.approx(100.0)
    assert score("bleu", [""], ["something"]).value == 0.0


def test_rouge_by_hand_and_with_unicode_words():
    r1 = score("rouge1", ["the cat sat"], ["the cat sat on the mat"]).value
    assert r1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P = 3/3, R = 3/6
    r2 = score("rouge2", ["the cat sat"], ["the cat sat on the mat"]).value
    assert r2 == pytest.approx(2 * 1.0 * 0.4 / 1.4)  # bigrams: P = 2/2, R = 2/5
    rl = score("rougeL", ["cat the sat"], ["the cat sat"]).value
    assert rl == pytest.approx(2 / 3)  # LCS 2 of 3 on both sides
    # rouge-score's default tokenizer drops non-ASCII words; ours keeps them: [café, au, lait] vs [café, noir]
    assert score("rouge1", ["café au lait"], ["Café noir"]).value == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert score("rouge1", ["", "x"], ["", ""]).scores == [1.0, 0.0]


# ----------------------------------------------------------------------------- JSON


def test_json_validity_fences_and_invalid_json():
    preds = ['{"a": 1}', '```json\n{"a": 1}\n```', '{"a": 1', "[1, 2]", "", 'Sure! {"a": 1}']
    assert score("json_valid", preds, ['{"a": 1}'] * 6).scores == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_json_field_accuracy_with_nested_objects():
    ref = '{"a": {"b": 1, "c": [1, 2]}, "d": "x"}'  # leaves: a.b, a.c (a list is one value), d
    preds = ['{"d": "x", "a": {"b": 1, "c": [2, 1]}}', "not json", '{"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": 5}']
    result = score("json_field_accuracy", preds, [ref] * 3)
    assert result.scores == pytest.approx([2 / 3, 0.0, 1.0])  # extra fields are not penalized
    assert result.value == pytest.approx((2 + 0 + 3) / 9)
    assert_consistent("json_field_accuracy", result)
    assert metrics.flatten({"a": {"b": {"c": 1}}, "d": []}) == {"a.b.c": 1, "d": []}


def test_json_exact_match_ignores_key_order_and_spacing():
    ref = '{"category": "billing", "priority": "high"}'
    preds = ['{"priority":"high","category":"billing"}', '{"category": "billing"}', "oops"]
    assert score("json_exact_match", preds, [ref] * 3).scores == [1.0, 0.0, 0.0]


def test_json_answers_select_the_json_family():
    prof = metrics.profile(['{"x": 1}', '{"x": 2}', '{"x": {"y": 3}}'])
    names = metrics.auto_metrics(prof)
    assert prof.json_objects and {"json_valid", "json_field_accuracy", "json_exact_match"} <= set(names)
    assert "accuracy" not in names


# ----------------------------------------------------------------------------- registry


def test_a_user_metric_registers_with_a_decorator_and_is_a_mean(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))

    @metrics.metric("starts_with_yes", version="7")
    def starts_with_yes(prediction: str, reference: str) -> float:
        return float(prediction.lower().startswith("yes"))

    result = metrics.get("starts_with_yes").score(["Yes sir", "no", "yes"], ["", "", ""])
    assert result.value == pytest.approx(2 / 3) and result.stats.shape == (3, 1)
    assert metrics.versions(["starts_with_yes", "bleu"])["starts_with_yes"] == "7"
    assert "starts_with_yes" not in metrics.auto_metrics(metrics.profile(["a b c d"]))  # only when asked for


def test_unknown_metric_and_bad_module_are_user_errors():
    with pytest.raises(metrics.MetricError, match="unknown metric 'nope'"):
        metrics.get("nope")
    with pytest.raises(metrics.MetricError, match="cannot import metrics module"):
        metrics.load_modules(["no_such_module_for_oikyo"])


def test_every_builtin_has_a_version_and_consistent_statistics():
    preds, refs = ["a b", "c", '{"k": 1}'], ["a b", "d", '{"k": 2}']
    for name, metric in METRICS.items():
        assert metric.version, name
        if metric.input == "text":
            result = metric.score(preds, refs)
            assert result.stats.shape[0] == 3 and len(result.scores) == 3, name
            if not np.isnan(result.value):
                assert_consistent(name, result)
