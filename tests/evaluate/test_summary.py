"""evaluate_against_base: what quickstart calls, in process, printing fine-tuned vs base side by side."""

from __future__ import annotations

from oikyo.evaluate import evaluate_against_base, records


def test_evaluate_against_base_prints_and_stores_both(adapter_version, json_dataset):
    lines: list[str] = []
    result = evaluate_against_base(adapter_version.id, json_dataset.id, split="test", limit=4, log=lines.append,
                                   max_new_tokens=3)
    assert set(result["evaluations"]) == {"model", "base"}
    stored = records.get(result["evaluations"]["model"])
    assert stored.rows == 4 and stored.model_version_id == adapter_version.id and stored.forgetting is None
    loss = result["gain"]["loss"]
    assert loss["low"] <= loss["delta"] <= loss["high"]
    assert result["metrics"]["loss"]["model"] == stored.metrics["loss"]
    text = "\n".join(lines)
    assert "gain over base (95% CI)" in text and "json_field_accuracy" in text and adapter_version.id in text
