"""The real bundled SmolLM2-135M-Instruct fine-tuned with LoRA on real data (slow: ~1-2 minutes)."""

from __future__ import annotations

import json

import pytest
import torch

from oikyo.train.config import load_config
from oikyo.train.runner import RunContext

# bundled_model_dir is the session fixture of tests/conftest.py: the model is converted once for all slow tests.


def alpaca_rows(path, n: int) -> list[dict]:
    """The n shortest Alpaca records as canonical conversation rows (converted by hand)."""
    records = json.loads(path.read_text())
    records.sort(key=lambda r: len(r["instruction"]) + len(r["input"]) + len(r["output"]))
    rows = []
    for record in records[:n]:
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]})
    return rows


@pytest.mark.slow
def test_lora_on_the_bundled_model_learns_and_freezes_the_base(bundled_model_dir, shared_datasets, tmp_path):
    from oikyo.train.sft import SFTRecipe

    rows = alpaca_rows(shared_datasets / "alpaca_en_demo.json", 8)
    config = load_config(None, ["train.max_steps=4", "train.batch_size=4", "train.lr=2e-3", "train.warmup_steps=0",
                                "train.eval_every=100", "checkpoint.save_every=null", "data.max_length=256",
                                "lora.dropout=0.0"])
    ctx = RunContext(tmp_path / "run", bundled_model_dir, lambda: rows, lambda: rows, lambda s, m: None,
                     lambda: False, lambda message: None)
    recipe = SFTRecipe(config, ctx)
    recipe.setup()
    model = recipe.session.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    initial = recipe.session.evaluate(recipe)["eval_loss"]
    result = recipe.train()
    final = result.best_eval_loss
    after = dict(model.named_parameters())
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    recipe.cleanup()

    assert result.status == "succeeded" and result.steps == 4
    assert final < initial - 0.2, (initial, final)  # 2 epochs over 8 rows: the loss must fall clearly
    assert sum(before[n].numel() for n in before) > 130_000_000  # the real 135M model
    assert trainable and all("lora_" in name for name in trainable)
    for name, tensor in before.items():
        if name in trainable:
            assert not torch.equal(tensor, after[name].detach()), f"trainable {name} did not change"
        else:
            assert torch.equal(tensor, after[name].detach()), f"frozen {name} changed"
    assert (result.output_dir / "adapter_model.safetensors").is_file()
