"""Replay mixing (data.mix): config checks, replay rows really in the batches, exact resume, lineage.

The replay set here is a small crafted one (the shipped file is checked in tests/data/test_replay_data.py),
written where :func:`oikyo.data.replay.load_replay` looks for the shipped set, so the tests do not
depend on the builder's output.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from trainhelpers import FAST, chat_rows, run_direct

from oikyo.data import replay as replay_pkg
from oikyo.train import data
from oikyo.train.config import ConfigError, load_config
from oikyo.train.runner import RunContext
from oikyo.train.sft import SFTRecipe

REPLAY_WORD = "zebra"  # appears only in replay answers


def replay_rows(n: int = 10) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Tell me about animal {i}."},
                          {"role": "assistant", "content": f"Animal {i} is a {REPLAY_WORD}, striped and fast."}]}
            for i in range(n)]


@pytest.fixture
def replay_file(tmp_path, monkeypatch):
    path = tmp_path / "general.jsonl"
    lines = [json.dumps({"provenance": {"replay_version": "test"}})] + [json.dumps(r) for r in replay_rows()]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(replay_pkg, "SHIPPED_FILE", path)
    return path


# ----------------------------------------------------------------------------- config


def test_mix_bounds_and_methods_are_checked_with_clear_messages():
    assert load_config(None, ["data.mix=0.25"]).data.mix == 0.25
    assert load_config(None).data.mix == 0.0 and load_config(None).data.mix_dataset is None
    for overrides, expected in [
        (["data.mix=1"], "data.mix: Input should be less than 1"),
        (["data.mix=-0.5"], "data.mix: Input should be greater than or equal to 0"),
        (["data.mix=0.2", "method.name=dpo"], "supported by method sft only; set data.mix=0 for dpo"),
        (["data.mix=0.2", "method.name=pretrain"], "supported by method sft only; set data.mix=0 for pretrain"),
        (["data.mix=0.2", "method.name=grpo", "grpo.rewards=json_valid"], "set data.mix=0 for grpo"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(None, overrides)
        assert expected in str(caught.value), overrides
    # Replay rows come on top of the task rows, so even one task row per batch works.
    assert load_config(None, ["data.mix=0.2", "train.batch_size=1"]).data.mix == 0.2


# ----------------------------------------------------------------------------- plans (pure functions)


def test_replay_total_is_the_share_of_all_examples():
    assert data.replay_total(30, 0.0) == 0
    assert data.replay_total(30, 0.25) == 10  # 10 / 40
    assert data.replay_total(30, 0.5) == 30
    assert data.replay_total(30, 0.001) == 1  # at least one when mixing


@pytest.mark.parametrize("mix", [0.05, 0.1, 0.2, 0.3])
def test_mix_plan_keeps_the_task_plan_and_adds_replay_at_the_share(mix):
    task = data.epoch_plan([5] * 40, 4, seed=1, epoch=0)
    plan = data.mix_plan(task, n_task=40, n_replay=7, mix=mix, seed=1, epoch=0)
    assert [[i for i in b if i < 40] for b in plan] == task  # same batches, same steps
    replayed = [i - 40 for b in plan for i in b if i >= 40]
    assert len(replayed) == data.replay_total(40, mix)
    assert abs(len(replayed) / (40 + len(replayed)) - mix) < 0.02
    assert len(set(replayed[:7])) == min(7, len(replayed))  # each replay row once before repeats
    # Spread over the epoch, not bunched: every half of the batches holds about half the replay rows.
    first_half = sum(i >= 40 for b in plan[:5] for i in b)
    assert abs(first_half - len(replayed) / 2) <= 1
    assert plan == data.mix_plan(task, 40, 7, mix, seed=1, epoch=0)  # pure function of seed and epoch


def test_mix_plans_differ_by_epoch_and_seed():
    task = data.epoch_plan([5] * 40, 4, seed=1, epoch=0)
    plan = data.mix_plan(task, 40, 7, 0.25, seed=1, epoch=0)
    assert plan != data.mix_plan(task, 40, 7, 0.25, seed=1, epoch=1)
    assert plan != data.mix_plan(task, 40, 7, 0.25, seed=2, epoch=0)


def test_mixed_order_for_packing_has_the_asked_share():
    order = data.mixed_order(n_task=60, n_replay=5, mix=0.25, seed=0, epoch=0)
    replay = [i for i in order if i >= 60]
    assert sorted(i for i in order if i < 60) == list(range(60))
    assert len(replay) == 20  # 20 / 80 = 0.25 of the examples
    assert order == data.mixed_order(60, 5, 0.25, seed=0, epoch=0)


# ----------------------------------------------------------------------------- a real run


def _recipe(tiny_dir, tmp_path, overrides, rows):
    config = load_config(None, [*FAST, *overrides])
    ctx = RunContext(tmp_path / "run", tiny_dir, lambda: rows, lambda: rows[:6], lambda *a: None, lambda: False,
                     lambda m: None)
    recipe = SFTRecipe(config, ctx)
    recipe.setup()
    return recipe


def test_a_mixed_run_puts_replay_rows_into_every_batch(tiny_dir, tmp_path, replay_file, tokenizer):
    rows = chat_rows(24)
    recipe = _recipe(tiny_dir, tmp_path, ["data.mix=0.25", "train.batch_size=4"], rows)
    try:
        assert recipe.n_task == 24 and len(recipe.examples) == 24 + 10
        # The validation loss stays on the task's validation rows: no replay example among them.
        assert len(recipe.eval_examples) == 6
        assert not any(REPLAY_WORD in tokenizer.decode(e.input_ids) for e in recipe.eval_examples)
        plan = recipe.plan(0)
        # 24 task rows in 6 batches of 4, with 8 replay rows on top (8 / 32 = 0.25), 1 or 2 per batch.
        per_batch = [sum(i >= 24 for i in b) for b in plan]
        assert len(plan) == 6 and sum(per_batch) == 8 and set(per_batch) <= {1, 2}
        assert [len(b) - n for b, n in zip(plan, per_batch)] == [4] * 6
        assert Counter(i for b in plan for i in b if i < 24) == Counter(range(24))
        batch = recipe.make_batch(plan[0])
        # The replay row is really a replay conversation, encoded with the chat template and trained on.
        replay_row = plan[0].index(next(i for i in plan[0] if i >= 24))
        text = tokenizer.decode(batch["input_ids"][replay_row][batch["attention_mask"][replay_row].bool()])
        assert REPLAY_WORD in text and "<|im_start|>assistant" in text
        trained = batch["labels"][replay_row][batch["labels"][replay_row] != data.IGNORE_INDEX]
        assert REPLAY_WORD in tokenizer.decode(trained)
        assert batch["replay_mask"][replay_row].sum() == batch["attention_mask"][replay_row].sum()
        assert batch["replay_mask"].sum() == batch["replay_mask"][replay_row].sum()  # only that row
        assert json.loads((tmp_path / "run" / "replay.json").read_text())["source"] == "shipped"
    finally:
        recipe.cleanup()


def test_a_mixed_run_reports_the_replay_share_and_names_the_replay_set(train_tiny, replay_file):
    run = train_tiny(["data.mix=0.25", "train.batch_size=4", "train.max_steps=4", "train.eval_every=4"])
    shares = run.series("replay_share")
    assert len(shares) == 4 and all(0 < s < 1 for s in shares)
    assert len(run.series("replay_loss")) == 4 and len(run.series("task_loss")) == 4
    assert run.result.replay["source"] == "shipped" and run.result.replay["rows"] == 10
    plain = train_tiny(["train.batch_size=4", "train.max_steps=4", "train.eval_every=4"],
                       run_dir=run.result.output_dir.parent.parent / "plain")
    assert plain.series("replay_share") == [] and plain.result.replay is None


def test_packing_with_mix_puts_replay_examples_into_blocks(tiny_dir, tmp_path, replay_file):
    recipe = _recipe(tiny_dir, tmp_path, ["data.mix=0.25", "data.packing=true", "data.max_length=128",
                                          "train.batch_size=2", "data.eval_split=null"], chat_rows(30))
    try:
        examples = [i for batch in recipe.plan(0) for block in batch for i in block]
        assert sum(i >= 30 for i in examples) == 10 and sorted(i for i in examples if i < 30) == list(range(30))
        mixed = next(b for b in recipe.plan(0) if any(i >= 30 for block in b for i in block))
        batch = recipe.make_batch(mixed)
        replay_tokens = sum(recipe.lengths[i] for block in mixed for i in block if i >= 30)
        assert batch["replay_mask"].sum() == replay_tokens and (batch["replay_mask"] & (batch["token_mask"] == 0)).sum() == 0
    finally:
        recipe.cleanup()


def test_a_cancelled_mixed_run_resumes_exactly(tiny_dir, tmp_path, replay_file):
    from safetensors.torch import load_file

    rows = chat_rows(20)
    overrides = [*FAST, "data.mix=0.3", "train.max_steps=8", "train.batch_size=3", "train.grad_accum=2",
                 "train.lr=5e-3", "train.eval_every=3", "checkpoint.save_every=100", "lora.dropout=0.2",
                 "train.seed=5"]

    reference, expected = run_direct(overrides, tmp_path / "reference", tiny_dir, rows)
    cancelled, _ = run_direct(overrides, tmp_path / "resumed", tiny_dir, rows, stop_after=3)
    assert cancelled.status == "cancelled" and cancelled.steps == 3
    resumed, after = run_direct(overrides, tmp_path / "resumed", tiny_dir, rows)
    assert resumed.status == "succeeded" and min(after) == 4
    for step in range(4, 9):
        for key in ("loss", "grad_norm", "replay_share", "replay_loss", "eval_loss"):
            if key in expected[step]:
                assert after[step][key] == expected[step][key], (step, key)
    final, ref = load_file(str(resumed.output_dir / "adapter_model.safetensors")), \
        load_file(str(reference.output_dir / "adapter_model.safetensors"))
    assert all(torch.equal(final[k], ref[k]) for k in ref)


def test_resuming_with_another_replay_set_is_refused(tiny_dir, tmp_path, replay_file):
    from oikyo.train import TrainingError

    rows = chat_rows(12)
    overrides = [*FAST, "data.mix=0.3", "train.max_steps=4", "train.batch_size=3", "data.eval_split=null"]
    cancelled, _ = run_direct(overrides, tmp_path / "run", tiny_dir, rows, stop_after=1)
    assert cancelled.status == "cancelled"
    replay_file.write_text(replay_file.read_text() + json.dumps(replay_rows(1)[0]) + "\n")
    with pytest.raises(TrainingError, match="exact resume needs the same replay data"):
        run_direct(overrides, tmp_path / "run", tiny_dir, rows)


def test_mix_dataset_replays_a_dataset_version_and_refuses_other_kinds(tiny_dir, tmp_path):
    from oikyo.data import versions
    from oikyo.data.replay import ReplayError, load_replay

    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in replay_rows(6)))
    version = versions.import_dataset(path, name="chats").version
    replay = load_replay("chats")
    assert len(replay.rows) == 6 and replay.lineage == {
        "source": "dataset", "dataset_version": version.id, "dataset_hash": version.content_hash, "rows": 6}
    text = tmp_path / "notes.txt"
    text.write_text("Some plain text.\n\nAnother paragraph.\n")
    versions.import_dataset(text, name="notes")
    with pytest.raises(ReplayError, match="holds text rows; replay needs conversations"):
        load_replay("notes")
    with pytest.raises(ReplayError, match="data.mix_dataset"):
        load_replay("no-such-dataset")


def test_submitting_pins_the_replay_dataset_and_refuses_a_bad_one_before_queueing(tiny_dir, tmp_path):
    from oikyo.data import versions
    from oikyo.jobs.training import SubmitError, prepare

    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in replay_rows(6)))
    version = versions.import_dataset(path, name="chats").version
    common = ["data.train_split=null", "data.eval_split=null", "data.mix=0.2"]
    prepared = prepare(None, [*common, "data.mix_dataset=chats"], dataset="chats", model=str(tiny_dir))
    assert prepared.config.data.mix_dataset == version.id  # the exact version, as for data.dataset
    with pytest.raises(SubmitError) as caught:
        prepare(None, [*common, "data.mix_dataset=nope"], dataset="chats", model=str(tiny_dir))
    assert any(p.startswith("data.mix_dataset:") and "nope" in p for p in caught.value.problems)


def test_the_model_version_lineage_names_the_replay_set(tiny_dir, tmp_path, replay_file):
    """A queued run with data.mix, executed by the job system: its model version records the replay set."""
    import hashlib
    import threading

    from oikyo.data import versions
    from oikyo.jobs import model_versions, queue
    from oikyo.jobs.execution import execute_claimed
    from oikyo.jobs.training import submit_training

    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(12)))
    versions.import_dataset(path, name="task")
    run = submit_training(None, [*FAST, "data.train_split=null", "data.eval_split=null", "data.mix=0.2",
                                 "train.max_steps=2", "train.batch_size=4"], dataset="task", model=str(tiny_dir))
    claimed = queue.claim("test-worker", lease_s=60)
    assert claimed.id == run.id
    assert execute_claimed(claimed, "test-worker", lease_s=60, heartbeat_s=5, shutdown=threading.Event()) == "succeeded"
    (version,) = model_versions.list_versions(run_id=run.id)
    assert version.lineage["replay"] == {"source": "shipped", "replay_version": "test", "rows": 10,
                                         "sha256": hashlib.sha256(replay_file.read_bytes()).hexdigest()}
    assert version.lineage["config"]["data"]["mix"] == 0.2
