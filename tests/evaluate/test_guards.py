"""The overlap guard, model references, and what an evaluation records (in-process, tiny model)."""

from __future__ import annotations

import json

import pytest

from oikyo.errors import OikyoError
from oikyo.evaluate import records
from oikyo.evaluate.guards import OverlapError
from oikyo.evaluate.runner import EvalSpec, prepare, run_evaluation
from oikyo.evaluate.targets import resolve_target

from evalhelpers import make_json_dataset, register_adapter, write_json_rows


def test_evaluating_on_the_training_split_is_refused(adapter_version, json_dataset):
    with pytest.raises(OverlapError) as caught:
        prepare(EvalSpec(model=adapter_version.id, split="train", probe=False))
    message = str(caught.value)
    assert "the very data" in message and "--force" in message and "forced_overlap" in message
    assert f"{json_dataset.splits['train']} of {json_dataset.splits['train']} evaluation rows" in message


def test_the_test_split_of_the_training_dataset_is_fine(adapter_version, json_dataset):
    prepared = prepare(EvalSpec(model=adapter_version.id, probe=False))  # default: its dataset's test split
    assert prepared.split == "test" and prepared.dataset_id == json_dataset.id
    assert not prepared.forced_overlap and prepared.overlap["rows"] == 0 and not prepared.overlap["overlapping"]


def test_rows_shared_through_another_version_are_caught(adapter_version, json_dataset, tmp_path):
    # The unsplit parent holds the training rows too: same content, another version, no split.
    parent = json_dataset.parent_id
    with pytest.raises(OverlapError, match=r"evaluation rows are in its training rows"):
        prepare(EvalSpec(model=adapter_version.id, dataset=parent, split=None, probe=False))
    # A re-import with a few rows in common: a different dataset altogether, still caught by content.
    from oikyo.data import split, versions

    rows = write_json_rows(tmp_path / "again.jsonl", 40)  # rows 0..29 are the original ones
    versions.import_dataset(rows, name="again")
    again, _ = split.split_dataset("again", validation=0.0, test=0.5, seed=1)
    with pytest.raises(OverlapError, match=r"of \d+ evaluation rows are in its training rows"):
        prepare(EvalSpec(model=adapter_version.id, dataset=again.id, split="test", probe=False))


def test_force_evaluates_and_marks_the_result(adapter_version, json_dataset):
    found = run_evaluation(EvalSpec(model=adapter_version.id, split="train", force=True, baselines=False,
                                    probe=False, limit=3, max_new_tokens=4))
    [model] = found
    assert model.forced_overlap is True and model.overlap["same_version_and_split"]
    records.save(found)
    stored = records.get(model.id)
    assert stored.forced_overlap and records.describe(stored)["forced_overlap"] is True


def test_a_base_model_has_no_training_data_to_guard(tiny_model_dir, json_dataset):
    prepared = prepare(EvalSpec(model=str(tiny_model_dir), dataset=json_dataset.id, split="train", probe=False))
    assert prepared.overlap is None and [s.role for s in prepared.systems] == ["model"]
    with pytest.raises(OikyoError, match="base model: name the data"):
        prepare(EvalSpec(model=str(tiny_model_dir)))


def test_model_references(adapter_version, tiny_model_dir):
    assert resolve_target(adapter_version.id).kind == "adapter"
    assert resolve_target(adapter_version.id[:7]).model_version_id == adapter_version.id  # unique prefix
    assert resolve_target(str(tiny_model_dir)).is_base
    with pytest.raises(OikyoError, match="not a model version"):
        resolve_target("no-such-model")


def test_an_evaluation_records_everything(adapter_version, json_dataset):
    found = run_evaluation(EvalSpec(model=adapter_version.id, probe=False, max_new_tokens=6, few_shot_k=2))
    assert [e.role for e in found] == ["model", "base", "few_shot"]
    model, base, few = found
    assert model.model_version_id == adapter_version.id and base.model_version_id is None
    assert {e.dataset_version_id for e in found} == {json_dataset.id} and {e.split for e in found} == {"test"}
    assert {"loss", "perplexity", "json_valid", "json_field_accuracy", "exact_match"} <= set(model.metrics)
    assert "loss" not in few.metrics  # few-shot is scored on its answers only
    assert set(model.metric_versions) == set(model.metrics)
    assert model.generation["temperature"] == 0 and model.generation["max_new_tokens"] == 6
    assert few.settings["few_shot"]["k"] == 2 and len(few.settings["few_shot"]["shots"]) == 2
    assert model.group_id == base.group_id == few.group_id
    records.save(found)
    rows = records.read_examples(records.get(model.id))
    assert len(rows) == model.rows == json_dataset.splits["test"]
    assert {"question", "reference", "prediction", "scores", "stats", "key"} <= set(rows[0])
    json.loads(rows[0]["reference"])
    assert model.metrics["loss"] != base.metrics["loss"]  # the adapter changes the model


def test_the_same_evaluation_twice_gives_the_same_answers(adapter_version):
    spec = EvalSpec(model=adapter_version.id, probe=False, baselines=False, max_new_tokens=6)
    first, second = run_evaluation(spec)[0], run_evaluation(spec)[0]
    assert first.metrics == second.metrics


def test_unknown_split_and_metric_are_reported(adapter_version, json_dataset):
    with pytest.raises(OikyoError, match="unknown metric"):
        prepare(EvalSpec(model=adapter_version.id, metrics=["nope"], probe=False))
    unsplit = json_dataset.parent_id
    with pytest.raises(OikyoError, match="is not split"):
        prepare(EvalSpec(model=adapter_version.id, dataset=unsplit, split="test", probe=False))


def test_a_model_trained_on_another_dataset_may_use_this_one(tiny_adapter_dir, tiny_model_dir, tmp_path):
    first = make_json_dataset(tmp_path, "first", 30)
    other_rows = tmp_path / "other.jsonl"
    other_rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                         {"role": "assistant", "content": f"a{i % 3}"}]}) + "\n"
                                  for i in range(20)))
    from oikyo.data import split, versions

    versions.import_dataset(other_rows, name="other")
    other, _ = split.split_dataset("other", validation=0.0, test=0.3, seed=0)
    mv = register_adapter(tiny_adapter_dir, tiny_model_dir, first, mv_id="mv-0000bbbb")
    prepared = prepare(EvalSpec(model=mv.id, dataset="other", split="train", probe=False))
    assert not prepared.forced_overlap and {"accuracy", "macro_f1"} <= set(prepared.metric_names)
    assert other.id == prepared.dataset_id
