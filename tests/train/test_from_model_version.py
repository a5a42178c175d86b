"""Training from a model version (``model.name: mv-...``): the job bridge resolves it, the run starts from
that model's weights, the lineage names the parent, and evaluation's baseline is the parent model.

Everything runs through the job system with the real recipe on the tiny random model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oikyo.jobs import model_versions, queue, runs, training
from oikyo.jobs.worker import Worker

TRAIN = ("train.num_threads=1", "train.max_steps=3", "train.batch_size=4", "data.max_length=64",
         "checkpoint.save_every=3", "train.eval_every=3", "checkpoint.keep_best=1", "train.lr=1e-2")


@pytest.fixture
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)


def _dataset(tmp_path: Path, name: str = "items", n: int = 30):
    """A split conversations dataset version (train / validation / test) with JSON answers."""
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Describe item {i}."},
                          {"role": "assistant", "content": json.dumps({"colour": ("red", "blue")[i % 2]})}]}
            for i in range(n)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name=name)
    version, _ = split.split_dataset(name, validation=0.2, test=0.2, seed=0)
    return version


def _train(dataset, model: str, *extra: str, queued=None):
    run = training.submit_training(None, [*TRAIN, *extra], dataset=dataset.id, model=model)
    if queued:
        queued(run)
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    [mv] = [v for v in model_versions.list_versions(run_id=run.id) if v.kind != "merged"]
    return done, mv


def test_sft_from_a_full_model_version_starts_from_its_weights(real_recipe, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    _, parent = _train(dataset, str(tiny_model_dir), "method.finetune=full")
    assert parent.kind == "full"
    assert training.resolve_model_dir(parent.id) == Path(parent.path)  # a full version is used as it is

    # A unique prefix is enough; the queued config pins the full id, as the dataset is pinned.
    child_run, child = _train(dataset, parent.id[:6], "method.finetune=lora")
    assert child_run.config["model"]["name"] == parent.id and child_run.base_model == parent.id
    assert child.base_model == parent.id and child.lineage["base_model_version"] == parent.id

    # The child starts from the parent's trained weights: its first loss (LoRA starts as a no-op) is
    # well below that of the same run started from the untrained tiny model the parent came from.
    fresh_run, _ = _train(dataset, str(tiny_model_dir), "method.finetune=lora")
    child_first = runs.metric_series(child_run.id, ["loss"])["loss"][0][1]
    fresh_first = runs.metric_series(fresh_run.id, ["loss"])["loss"][0][1]
    assert child_first < fresh_first - 0.4, (child_first, fresh_first)
    merged = model_versions.merge(child.id)  # merging the child's adapter goes onto the parent too
    assert merged.base_model == parent.id and (Path(merged.path) / "model.safetensors").is_file()


def test_an_adapter_version_is_merged_once_and_evaluation_uses_it_as_the_base(real_recipe, tiny_model_dir,
                                                                               tmp_path):
    from oikyo.evaluate.runner import EvalSpec, _model_dirs, run_evaluation
    from oikyo.evaluate.targets import resolve_target

    dataset = _dataset(tmp_path)
    _, parent = _train(dataset, str(tiny_model_dir))
    assert parent.kind == "adapter"

    def nothing_merged_yet(run):  # submitting only checks the version: the worker merges it
        assert [v for v in model_versions.list_versions() if v.kind == "merged"] == []

    _, child = _train(dataset, parent.id, queued=nothing_merged_yet)
    merges = [v for v in model_versions.list_versions() if v.kind == "merged"]
    assert len(merges) == 1 and merges[0].lineage["parent_model_version"] == parent.id
    assert training.resolve_model_dir(parent.id) == Path(merges[0].path)  # reused, not merged again
    assert len([v for v in model_versions.list_versions() if v.kind == "merged"]) == 1

    # Evaluation's baseline for the child is the model it was trained from (the parent, merged).
    target = resolve_target(child.id)
    assert target.base_model == parent.id
    model_dir, base_dir = _model_dirs(target)
    assert Path(base_dir) == Path(merges[0].path) and model_dir == base_dir  # an adapter runs on its base
    evaluation = run_evaluation(EvalSpec(model=child.id, max_new_tokens=3, few_shot_k=0, probe=False))
    assert [e.role for e in evaluation] == ["model", "base"]
    assert evaluation[1].base_model == parent.id and evaluation[0].model_version_id == child.id

    # Serving loads the child adapter on top of the same folder.
    from oikyo.serve.gateway import served_models

    spec = served_models.resolve(child.id)
    assert spec.kind == "adapter" and Path(spec.load_dir) == Path(merges[0].path).resolve()
    assert served_models.adapters_on(spec.load_dir) == {child.id: str(Path(child.path).resolve())}


def test_bad_model_versions_and_data_kinds_are_refused_before_queueing(real_recipe, tiny_model_dir, tmp_path):
    dataset = _dataset(tmp_path)
    with pytest.raises(training.SubmitError, match=r"model\.name: .*mv-doesnotexist"):
        training.submit_training(None, list(TRAIN), dataset=dataset.id, model="mv-doesnotexist")
    with pytest.raises(training.SubmitError, match=r"holds conversations rows, but method dpo trains on preference"):
        training.submit_training(None, [*TRAIN, "method.name=dpo"], dataset=dataset.id, model=str(tiny_model_dir))
    assert "method.name=grpo or sft" in training.method_kind_problems("kto", dataset)[0]
    assert runs.list_runs() == []
