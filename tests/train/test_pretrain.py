"""Continued pretraining: text only, every token trained, packing by default, long documents cut into
pieces without losing a token, exact resume, and the chain pretrain -> model version -> SFT from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_kto import kto_rows
from trainhelpers import FAST, chat_rows, preference_rows, run_direct

from oikyo.models.chat_template import encode_text
from oikyo.train import TrainingError
from oikyo.train.config import load_config
from oikyo.train.data import TokenLimit
from oikyo.train.pretrain import PretrainRecipe, encode_pretrain_rows
from oikyo.train.runner import RunContext


def text_rows(n: int = 24) -> list[dict]:
    """Short, repetitive documents (easy to fit) of varied lengths."""
    return [{"text": f"Document {i}. " + "The river runs past the stone mill. " * (1 + i % 4)} for i in range(n)]


def test_pretrain_packs_by_default_and_a_config_can_turn_it_off():
    assert load_config(None, ["method.name=pretrain"]).data.packing is True
    assert load_config(None, ["method.name=pretrain", "data.packing=false"]).data.packing is False
    assert load_config(None, ["method.name=sft"]).data.packing is False


def test_long_documents_are_cut_into_pieces_without_losing_a_token(tokenizer):
    long_text = " ".join(f"word{i}" for i in range(200))
    logs = []
    examples = encode_pretrain_rows([{"text": "short one"}, {"text": long_text}, {"text": ""}], tokenizer,
                                    limit=TokenLimit(64, 8192), log=logs.append)
    whole = encode_text(tokenizer, long_text).input_ids
    assert len(whole) > 128  # at least three pieces
    pieces = examples[1:]
    assert all(len(p) <= 64 for p in examples) and len(pieces) == -(-len(whole) // 64)
    assert [t for p in pieces for t in p.input_ids] == whole  # nothing dropped, order kept
    assert all(p.labels == p.input_ids for p in examples)  # every token is a label
    assert any("1 document(s) longer than data.max_length (64 tokens) were cut into pieces" in line for line in logs)
    assert "train: skipped 1 empty document(s)" in logs  # said, not silently dropped


def test_every_token_but_each_documents_first_counts_in_the_packed_loss(tiny_dir, tmp_path):
    rows = text_rows(8)
    config = load_config(None, [*FAST, "method.name=pretrain", "data.max_length=128", "train.batch_size=2"])
    ctx = RunContext(tmp_path / "run", tiny_dir, lambda: rows, None, lambda s, m: None, lambda: False, lambda m: None)
    recipe = PretrainRecipe(config, ctx)
    recipe.setup()
    try:
        plan = recipe.plan(0)
        assert all(isinstance(block, list) for block in plan[0])  # packed: a batch is a list of blocks
        for items in plan:
            batch = recipe.make_batch(items)
            assert "position_ids" in batch and "attention_mask" not in batch
            documents = [recipe.examples[i] for block in items for i in block]
            assert recipe.count(batch) == sum(len(d) - 1 for d in documents) == recipe.units(items)
    finally:
        recipe.cleanup()


def test_pretrain_lowers_the_loss(train_tiny):
    run = train_tiny(["method.name=pretrain", "train.max_steps=10", "train.lr=1e-2", "train.batch_size=2",
                      "data.max_length=128", "train.eval_every=5"], rows=text_rows())
    assert run.result.status == "succeeded"
    losses = run.series("eval_loss")
    assert losses[-1] < losses[0] - 0.3, losses
    assert any("packing" in line or "pieces" in line or "documents" in line for line in run.logs)


def test_a_cancelled_pretrain_run_resumes_exactly(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    rows = text_rows(30)
    overrides = [*FAST, "method.name=pretrain", "train.max_steps=8", "train.batch_size=1", "train.grad_accum=2",
                 "data.max_length=96", "train.lr=5e-3", "train.eval_every=3", "checkpoint.save_every=100",
                 "lora.dropout=0.2", "train.seed=5"]

    def run(run_dir, stop_after=None):
        return run_direct(overrides, run_dir, tiny_dir, rows, stop_after)

    reference, expected = run(tmp_path / "reference")
    cancelled, _ = run(tmp_path / "resumed", stop_after=3)
    assert cancelled.status == "cancelled" and cancelled.steps == 3
    resumed, after = run(tmp_path / "resumed")
    assert resumed.status == "succeeded" and min(after) == 4
    for step in range(4, 9):
        for key in ("loss", "grad_norm", "lr", "tokens", "eval_loss"):
            assert after[step].get(key) == expected[step].get(key), (step, key)
    got = load_file(str(resumed.output_dir / "adapter_model.safetensors"))
    want = load_file(str(reference.output_dir / "adapter_model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    ("rows", "what"),
    [(chat_rows(4), "a conversation"), (preference_rows(4), "a preference pair"),
     (kto_rows(4), r"a judged answer \(unpaired preference\)")],
    ids=["conversations", "preference", "unpaired"],
)
def test_non_text_rows_are_refused_with_a_clear_message(train_tiny, rows, what):
    with pytest.raises(TrainingError, match=f"train row 0 is {what}, not plain text; method pretrain trains on text"):
        train_tiny(["method.name=pretrain", "train.max_steps=1"], rows=rows, eval_rows=None)


# ----------------------------------------------------------------------------- through the job system


def _import(tmp_path: Path, name: str, rows: list[dict]):
    from oikyo.data import versions

    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return versions.import_dataset(path, name=name).version


def _run_once(dataset, model: str, *overrides: str):
    from oikyo.jobs import model_versions, queue, training
    from oikyo.jobs.worker import Worker

    run = training.submit_training(None, ["train.num_threads=1", "train.max_steps=3", "train.batch_size=4",
                                          "data.max_length=64", "checkpoint.save_every=3", "train.lr=1e-2",
                                          *overrides], dataset=dataset.id, model=model)
    Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.1).run(once=True)
    done = queue.get(run.id)
    assert done.state == "succeeded", done.error
    [mv] = model_versions.list_versions(run_id=run.id)
    return done, mv


def test_pretrain_then_sft_from_that_model_version(monkeypatch, tiny_model_dir, tmp_path):
    from oikyo.jobs import training

    monkeypatch.delenv("OIKYO_RECIPE", raising=False)
    corpus = _import(tmp_path, "corpus", text_rows(16))
    chats = _import(tmp_path, "chats", chat_rows(16))
    assert corpus.kind == "text" and chats.kind == "conversations"

    # The bridge refuses the wrong kind before anything is queued, naming the method that fits.
    with pytest.raises(training.SubmitError, match=r"holds conversations rows, but method pretrain trains on text "
                                                   r"rows; conversations data trains with method.name=grpo or sft"):
        training.submit_training(None, ["method.name=pretrain", "data.train_split=null", "data.eval_split=null"],
                                 dataset=chats.id, model=str(tiny_model_dir))

    split_off = ("data.train_split=null", "data.eval_split=null")
    pretrain_run, pretrained = _run_once(corpus, str(tiny_model_dir), "method.name=pretrain", *split_off)
    assert pretrain_run.config["data"]["packing"] is True and pretrained.kind == "adapter"

    sft_run, tuned = _run_once(chats, pretrained.id, *split_off)
    assert sft_run.config["model"]["name"] == pretrained.id
    assert tuned.base_model == pretrained.id and tuned.lineage["base_model_version"] == pretrained.id
    assert tuned.lineage["config"]["method"]["name"] == "sft"
