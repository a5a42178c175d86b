"""run_training on a tiny random model: learning, what changes, checkpoints, cancel, early stop, DPO, merge."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from trainhelpers import FAST, chat_rows, preference_rows

from oikyo.train import TrainingError
from oikyo.train.config import load_config
from oikyo.train.runner import RunContext, merge_adapter

LORA_FILES = ["COMPLETE", "adapter_config.json", "adapter_model.safetensors", "optimizer.json",
              "optimizer.safetensors", "scheduler.json", "trainer_state.json"]
FULL_FILES = ["COMPLETE", "config.json", "generation_config.json", "model.safetensors", "optimizer.json",
              "optimizer.safetensors", "scheduler.json", "trainer_state.json"]


def _train_with_recipe(tiny_dir, tmp_path, overrides):
    """Run the SFT recipe by hand, returning (parameters before, parameters after, result)."""
    from oikyo.train.sft import SFTRecipe

    config = load_config(None, [*FAST, "checkpoint.save_every=null", *overrides])
    rows = chat_rows()
    ctx = RunContext(tmp_path / "run", tiny_dir, lambda: rows, lambda: rows[:8], lambda s, m: None,
                     lambda: False, lambda message: None)
    recipe = SFTRecipe(config, ctx)
    recipe.setup()
    model = recipe.session.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = recipe.train()
    after = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    recipe.cleanup()
    return before, after, trainable, result


def test_lora_trains_only_the_adapters(tiny_dir, tmp_path):
    before, after, trainable, result = _train_with_recipe(
        tiny_dir, tmp_path, ["train.max_steps=6", "train.lr=1e-2"]
    )
    assert result.status == "succeeded" and result.steps == 6
    assert trainable and all("lora_" in name for name in trainable)
    assert any("lora_" in n for n in before) and len(trainable) < len(before)
    for name in before:
        if name in trainable:
            assert not torch.equal(before[name], after[name]), f"trainable {name} did not change"
        else:
            assert torch.equal(before[name], after[name]), f"frozen {name} changed"


def test_full_fine_tuning_changes_every_base_weight(tiny_dir, tmp_path):
    before, after, trainable, _ = _train_with_recipe(
        tiny_dir, tmp_path, ["method.finetune=full", "train.max_steps=4", "train.lr=1e-3"]
    )
    assert trainable == set(before)
    for name in before:
        assert not torch.equal(before[name], after[name]), f"{name} did not change"


def test_sft_loss_goes_down_and_metrics_are_reported(train_tiny):
    run = train_tiny(["method.finetune=full", "train.max_steps=24", "train.lr=3e-3", "train.eval_every=8",
                      "train.batch_size=4", "checkpoint.save_every=12"])
    losses = run.series("loss")
    assert len(losses) == 24
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses
    evals = run.series("eval_loss")
    assert len(evals) == 3 and evals[-1] < evals[0]
    step, first = run.metrics[0]
    assert step == 1
    assert set(first) >= {"loss", "lr", "grad_norm", "tokens_per_s", "tokens", "epoch", "memory_mb"}
    tokens = run.series("tokens")
    assert tokens == sorted(tokens) and tokens[0] > 0
    assert run.series("epoch")[-1] == pytest.approx(3.0)  # 32 rows / batch 4 = 8 steps per epoch


def test_lora_sft_loss_goes_down(train_tiny):
    run = train_tiny(["train.max_steps=20", "train.lr=2e-2", "train.batch_size=4", "lora.rank=8"])
    losses = run.series("loss")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses


def test_packing_trains_too(train_tiny):
    run = train_tiny(["data.packing=true", "data.max_length=128", "train.max_steps=6", "train.lr=1e-2",
                      "method.finetune=full", "train.batch_size=2"])
    losses = run.series("loss")
    assert len(losses) == 6 and losses[-1] < losses[0]


def test_checkpoint_and_output_folders_hold_exactly_the_expected_files(train_tiny, tmp_path):
    run = train_tiny(["train.max_steps=4", "checkpoint.save_every=2", "checkpoint.keep_best=0"])
    result = run.result
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in sorted(root.iterdir())] == ["step-000004"]  # keep_best=0: only the newest
    assert sorted(p.name for p in result.final_checkpoint.iterdir()) == LORA_FILES
    output = sorted(p.name for p in result.output_dir.iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(output)
    assert not {"optimizer.safetensors", "trainer_state.json", "COMPLETE"} & set(output)
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_full_checkpoints_hold_model_safetensors(train_tiny):
    run = train_tiny(["method.finetune=full", "train.max_steps=2"])
    assert sorted(p.name for p in run.result.final_checkpoint.iterdir()) == FULL_FILES
    assert (run.result.output_dir / "model.safetensors").is_file()


def test_best_k_checkpoints_are_kept_by_validation_loss(train_tiny, tmp_path):
    run = train_tiny(["method.finetune=full", "train.max_steps=8", "train.lr=3e-2", "train.eval_every=1",
                      "checkpoint.save_every=1", "checkpoint.keep_best=2"])
    evals = dict((step, m["eval_loss"]) for step, m in run.metrics)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    best_two = sorted(sorted(evals, key=lambda s: (evals[s], s))[:2])
    expected = sorted({f"step-{s:06d}" for s in best_two} | {"step-000008"})
    assert kept == expected
    best_step = min(evals, key=lambda s: (evals[s], s))
    assert run.result.best_checkpoint.name == f"step-{best_step:06d}"
    assert run.result.best_eval_loss == min(evals.values())


def test_should_stop_cancels_with_a_checkpoint(train_tiny):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    run = train_tiny(["train.max_steps=50", "checkpoint.save_every=null"], should_stop=should_stop)
    result = run.result
    assert result.status == "cancelled" and result.steps == 3
    assert result.final_checkpoint.name == "step-000003" and (result.final_checkpoint / "COMPLETE").is_file()
    assert not result.output_dir.exists()


def test_early_stopping_triggers(train_tiny):
    run = train_tiny(["train.max_steps=50", "train.eval_every=1", "train.early_stopping_patience=2",
                      "train.early_stopping_min_delta=100"])
    result = run.result
    assert result.status == "stopped_early"
    assert result.steps == 3  # first evaluation sets the mark; two more without a 100-point gain stop it
    assert len(run.series("eval_loss")) == 3
    assert (result.final_checkpoint / "COMPLETE").is_file() and result.output_dir.is_dir()


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_dpo_grows_the_chosen_vs_rejected_margin(train_tiny, finetune):
    rows = preference_rows()
    run = train_tiny(["method.name=dpo", f"method.finetune={finetune}", "train.max_steps=12", "train.lr=1e-2",
                      "train.batch_size=4", "train.eval_every=1", "dpo.beta=0.5"], rows=rows)
    margins = run.series("eval_reward_margin")
    assert margins[-1] > margins[0] + 0.5 and margins[-1] > 0, margins
    losses = run.series("eval_loss")
    assert losses[-1] < losses[0]
    assert run.series("reward_accuracy")[-1] == 1.0


def test_an_over_long_row_stops_the_run_naming_it(train_tiny):
    rows = chat_rows(6)
    rows[4] = {"messages": [{"role": "user", "content": "long " * 300}, {"role": "assistant", "content": "ok"}]}
    with pytest.raises(TrainingError, match=r"row 4 \(\d+ tokens\)"):
        train_tiny(["data.max_length=128"], rows=rows)


def test_an_empty_dataset_is_a_training_error(train_tiny):
    with pytest.raises(TrainingError, match="empty"):
        train_tiny([], rows=[], eval_rows=None)


def test_merged_adapter_loads_in_plain_transformers_with_the_same_logits(train_tiny, tiny_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from oikyo.models.loading import load_model

    run = train_tiny(["train.max_steps=3", "train.lr=5e-2"])
    merged_dir = merge_adapter(tiny_dir, run.result.output_dir, tmp_path / "merged")
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert not list(merged_dir.glob("*.bin"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, local_files_only=True).eval()
    adapted = PeftModel.from_pretrained(load_model(tiny_dir), run.result.output_dir).eval()
    base = load_model(tiny_dir)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        got, expected, original = merged(ids).logits, adapted(ids).logits, base(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, original, atol=1e-4)  # the adapter did something
    weights = load_file(str(merged_dir / "model.safetensors"))
    assert not any("lora" in name for name in weights)
