"""Continuing a trained LoRA adapter (``model.start: continue``) at the recipe level: ``run_training`` with
``adapter_dir`` loads the adapter trainable and trains it further, starting where it left off, without
touching the parent's files; a continued run resumes exactly; the config refuses what cannot continue.

The job system's side (resolving the model version, the shape check, lineage, replay of the parent's
data) is in test_continue_lineage.py.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file
from trainhelpers import FAST, chat_rows


@pytest.fixture(scope="module")
def learnable_dir(tiny_dir, tmp_path_factory):
    """The tiny model with 10x larger (tied) embeddings: a frozen random head that small leaves LoRA ~1 nat
    to gain; at this scale an adapter fits chat_rows from ~12.6 to ~5.3 in 12 steps."""
    from transformers import AutoModelForCausalLM

    from oikyo.models.loading import load_tokenizer

    out = tmp_path_factory.mktemp("learnable") / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(out)
    load_tokenizer(tiny_dir).save_pretrained(out)
    return out


def _run(tiny_dir, run_dir, overrides, *, adapter_dir=None, rows=None, stop_after=None):
    """run_training on the tiny model; returns (result, metrics by step, log lines)."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    rows = rows or chat_rows(24)
    metrics, logs = {}, []
    result = run_training(
        load_config(None, [*FAST, *overrides]), run_dir=run_dir, model_dir=tiny_dir, train_rows=lambda: rows,
        eval_rows=lambda: rows[:6], on_metrics=lambda step, m: metrics.setdefault(step, m),
        should_stop=lambda: stop_after is not None and len(metrics) >= stop_after, log=logs.append,
        adapter_dir=adapter_dir,
    )
    return result, metrics, logs


PARENT = ["train.max_steps=12", "train.batch_size=4", "train.lr=2e-2", "train.warmup_steps=0",
          "train.eval_every=100", "checkpoint.save_every=100", "lora.rank=8", "lora.alpha=16", "train.seed=3"]


def test_a_continued_adapter_starts_where_its_parent_ended(learnable_dir, tmp_path):
    tiny_dir = learnable_dir
    parent, parent_metrics, _ = _run(tiny_dir, tmp_path / "parent", PARENT)
    adapter = parent.output_dir / "adapter_model.safetensors"
    before = hashlib.sha256(adapter.read_bytes()).hexdigest()
    parent_files = sorted(p.name for p in parent.output_dir.iterdir())
    last = parent_metrics[max(parent_metrics)]["loss"]

    steps = ["train.max_steps=3", "train.batch_size=4", "train.lr=1e-3", "train.eval_every=100",
             "checkpoint.save_every=100", "lora.rank=8", "lora.alpha=16", "train.seed=4"]
    child, child_metrics, logs = _run(tiny_dir, tmp_path / "child", steps, adapter_dir=parent.output_dir)
    fresh, fresh_metrics, _ = _run(tiny_dir, tmp_path / "fresh", steps)
    first, fresh_first = child_metrics[1]["loss"], fresh_metrics[1]["loss"]
    # The parent went from ~fresh_first down to `last`; the child's first step (before any update) sees
    # the parent's weights, so its loss is near the parent's last losses, far below a new adapter's.
    assert fresh_first - last > 2.0, (fresh_first, last)
    assert abs(first - last) < 0.25 * (fresh_first - last), (first, last, fresh_first)
    assert any("Continuing the adapter" in line for line in logs)

    # The parent's folder is left exactly as it was; the child wrote its own adapter, same shape.
    assert hashlib.sha256(adapter.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in parent.output_dir.iterdir()) == parent_files
    got, old = load_file(str(child.output_dir / "adapter_model.safetensors")), load_file(str(adapter))
    assert got.keys() == old.keys() and all(got[k].shape == old[k].shape for k in old)
    assert any(not torch.equal(got[k], old[k]) for k in old)  # it did train
    saved = json.loads((child.output_dir / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["lora_alpha"] == 16 and saved["inference_mode"] is True


def test_a_continued_run_resumes_exactly(tiny_dir, tmp_path):
    parent, _, _ = _run(tiny_dir, tmp_path / "parent", [*PARENT[1:], "train.max_steps=4"])
    overrides = ["train.max_steps=7", "train.batch_size=3", "train.grad_accum=2", "train.lr=5e-3",
                 "train.eval_every=3", "checkpoint.save_every=100", "lora.rank=8", "lora.alpha=16",
                 "lora.dropout=0.2", "train.seed=5"]

    def run(name, stop_after=None):
        return _run(tiny_dir, tmp_path / name, overrides, adapter_dir=parent.output_dir, stop_after=stop_after)

    reference, expected, _ = run("reference")
    cancelled, _, _ = run("resumed", stop_after=3)
    assert cancelled.status == "cancelled" and cancelled.steps == 3
    resumed, after, logs = run("resumed")
    assert resumed.status == "succeeded" and min(after) == 4
    assert any(line.startswith("Resumed from step-000003") for line in logs)
    for step in range(4, 8):
        for key in ("loss", "grad_norm", "lr", "eval_loss"):
            assert after[step].get(key) == expected[step].get(key), (step, key)
    name = "adapter_model.safetensors"
    got, want = load_file(str(resumed.output_dir / name)), load_file(str(reference.output_dir / name))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.start=continue"], r"model\.start: continue .* model\.name must be an adapter model version"),
        (["model.start=continue", "model.name=mv-1234", "method.finetune=full"],
         r"model\.start: .*method\.finetune must be lora or qlora"),
        (["model.start=continue", "model.name=mv-1234", "method.name=dpo"], r"model\.start: continue supports method"),
        (["data.mix=0.2", "data.mix_dataset=parent"], r"data\.mix_dataset: parent .* is not a model version"),
        (["model.name=mv-1234", "data.mix_dataset=parent"], r"data\.mix: data\.mix_dataset=parent .* above 0"),
        (["model.start=resume"], r"model\.start: Input should be 'merge' or 'continue'"),
    ],
)
def test_the_config_refuses_what_cannot_continue(overrides, message):
    from oikyo.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_merge_stays_the_default_and_continue_validates():
    from oikyo.train.config import load_config

    assert load_config(None, []).model.start == "merge"
    config = load_config(None, ["model.name=mv-1234", "model.start=continue", "data.mix=0.2",
                                "data.mix_dataset=parent"])
    assert config.model.start == "continue" and config.data.mix_dataset == "parent"


def test_recipes_with_their_own_model_refuse_an_adapter_to_continue(tiny_dir, tmp_path):
    """dpo builds its own model: given an adapter to continue it stops instead of training a new one."""
    from oikyo.train import TrainingError
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training
    from trainhelpers import preference_rows

    parent, _, _ = _run(tiny_dir, tmp_path / "parent", [*PARENT[1:], "train.max_steps=1"])
    config = load_config(None, [*FAST, "method.name=dpo", "train.max_steps=1", "train.batch_size=2"])
    rows = preference_rows(4)
    with pytest.raises(TrainingError, match="cannot continue an adapter"):
        run_training(config, run_dir=tmp_path / "dpo", model_dir=tiny_dir, train_rows=lambda: rows, eval_rows=None,
                     on_metrics=lambda *a: None, should_stop=lambda: False, log=lambda m: None,
                     adapter_dir=parent.output_dir)
