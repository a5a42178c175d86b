"""``model.start: continue`` and ``data.mix_dataset: parent`` through the job system: the child adapter is a
version on the parent's original base (served beside the parent on one base), its lineage names the parent
and the replayed dataset version with its share, and what cannot continue is refused before queueing.

Everything runs with the real recipe on the tiny random model (recipe-level behaviour, first-step loss
and exact resume: test_continue_adapter.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from oikyo.jobs import model_versions, queue, runs, training
from oikyo.jobs.worker import Worker

TRAIN = ("train.num_threads=1", "train.max_steps=3", "train.batch_size=4", "data.max_length=64",
         "checkpoint.save_every=3", "train.eval_every=3", "checkpoint.keep_best=1", "train.lr=1e-2")
CONTINUE = ("model.start=continue", "data.mix=0.25", "data.mix_dataset=parent")


@pytest.fixture(autouse=True)
def real_recipe(monkeypatch):
    monkeypatch.delenv("OIKYO_RECIPE", raising=False)


def _dataset(tmp_path: Path, name: str, word: str, n: int = 30):
    """A split conversations dataset version (train / validation / test)."""
    from oikyo.data import split, versions

    rows = [{"messages": [{"role": "user", "content": f"Name thing {i} ({name})."},
                          {"role": "assistant", "content": f"{word} {i % 3}"}]} for i in range(n)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    versions.import_dataset(path, name=name)
    version, _ = split.split_dataset(name, validation=0.2, test=0.2, seed=0)
    return version


def _train(dataset, model: str, *extra: str):
    run = training.submit_training(None, [*TRAIN, *extra], dataset=dataset.id, model=model)
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    [mv] = [v for v in model_versions.list_versions(run_id=run.id) if v.kind != "merged"]
    return done, mv


def _digest(folder: str) -> str:
    return hashlib.sha256((Path(folder) / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_a_continued_adapter_is_a_version_on_the_original_base_with_its_parent_and_replay(tiny_dir, tmp_path):
    from oikyo.serve.gateway import served_models

    first, second = _dataset(tmp_path, "first", "alpha"), _dataset(tmp_path, "second", "beta")
    _, parent = _train(first, str(tiny_dir))
    before = _digest(parent.path)

    child_run, child = _train(second, parent.id[:7], *CONTINUE)
    assert child_run.config["model"] == {"name": parent.id, "start": "continue"}  # the full id, pinned
    assert child_run.config["data"]["mix_dataset"] == "parent"  # resolved from the immutable lineage
    assert child_run.base_model == parent.base_model == str(tiny_dir)
    assert child.kind == "adapter" and child.base_model == parent.base_model
    assert child.lineage["parent_model_version"] == parent.id and child.lineage["operation"] == "continue"
    assert "base_model_version" not in child.lineage  # its base is a catalog model, as the parent's
    assert child.lineage["dataset_version"] == second.id
    replay = child.lineage["replay"]
    assert replay == {"source": "parent", "parent_model_version": parent.id, "dataset_version": first.id,
                      "dataset_hash": first.content_hash, "split": "train", "rows": first.splits["train"],
                      "share": 0.25}
    assert json.loads((Path(child_run.run_dir) / "replay.json").read_text()) == replay
    shares = [v for _, v in runs.metric_series(child_run.id, ["replay_share"])["replay_share"]]
    assert shares and all(0 < s < 1 for s in shares)

    # The parent's adapter is untouched and nothing was merged; the child trained the parent's matrices.
    assert _digest(parent.path) == before and _digest(child.path) != before
    assert [v for v in model_versions.list_versions() if v.kind == "merged"] == []
    assert json.loads((Path(child.path) / "adapter_config.json").read_text())["r"] == 16

    # One base engine serves both adapters.
    spec = served_models.resolve(child.id)
    assert spec.kind == "adapter" and served_models.adapters_on(spec.load_dir).keys() == {parent.id, child.id}

    # A continued adapter continues again: the grandchild still sits on the original base.
    _, grandchild = _train(second, child.id, "model.start=continue")
    assert grandchild.base_model == parent.base_model and grandchild.lineage["parent_model_version"] == child.id


def test_what_cannot_continue_or_replay_is_refused_before_queueing(tiny_dir, tmp_path):
    from oikyo.store import db
    from oikyo.store.models import ModelVersion

    first = _dataset(tmp_path, "first", "alpha")
    _, parent = _train(first, str(tiny_dir), "lora.rank=4", "lora.alpha=8", "lora.target_modules=[q_proj, v_proj]")

    def refused(*extra: str) -> list[str]:
        with pytest.raises(training.SubmitError) as caught:
            training.submit_training(None, [*TRAIN, *extra], dataset=first.id, model=parent.id)
        return caught.value.problems

    problems = refused("model.start=continue", "lora.alpha=8", "lora.target_modules=[q_proj]")
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"lora.rank: 16 differs from the rank of {parent.id}'s adapter (4)")
    assert problems[1].startswith(f"lora.target_modules: ['q_proj'] differs from the target_modules of {parent.id}")
    # The matching shape is accepted (dropout may differ: it is a training setting).
    shape = ("lora.rank=4", "lora.alpha=8", "lora.target_modules=[v_proj, q_proj]", "lora.dropout=0.1")
    assert training.prepare(None, [*TRAIN, "model.start=continue", *shape], dataset=first.id,
                            model=parent.id).base_model == str(tiny_dir)

    merged = model_versions.merge(parent.id)
    with pytest.raises(training.SubmitError, match=rf"model\.start: continue trains an adapter further, but "
                                                  rf"{merged.id} is a merged model"):
        training.submit_training(None, [*TRAIN, "model.start=continue", *shape], dataset=first.id, model=merged.id)

    with db.session() as s:  # a version whose lineage names no dataset (e.g. registered by hand)
        record = s.get(ModelVersion, parent.id)
        record.lineage = {k: v for k, v in record.lineage.items() if k != "dataset_version"}
    problems = refused("data.mix=0.2", "data.mix_dataset=parent")
    assert problems == [f"data.mix_dataset: parent replays the data that trained {parent.id}, but its lineage names "
                        "no dataset version; set data.mix_dataset to a dataset version instead"]
    assert len(runs.list_runs()) == 1  # only the parent's run was ever queued


def test_outside_the_job_system_parent_replay_needs_the_rows(tiny_dir, tmp_path):
    """run_training alone cannot read a lineage: data.mix_dataset=parent without ctx.replay says so."""
    from oikyo.data.replay import ReplayError, load_replay

    with pytest.raises(ReplayError, match="parent is resolved from the lineage"):
        load_replay("parent")
