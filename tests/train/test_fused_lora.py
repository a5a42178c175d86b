"""The fused LoRA forward computes what peft computes: same loss, same gradients, same fallbacks."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from oikyo.train.fused_lora import fuse_lora_layers

CONFIG = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)


def _peft_model(fused: bool, dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(CONFIG), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                 lora_dropout=dropout))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapters matter
            parameter.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    if fused:
        assert fuse_lora_layers(model) == 2 * 7  # q, k, v, o, gate, up, down per layer
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_loss_and_gradients_equal_pefts(dropout):
    ids = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for fused in (False, True):
        model = _peft_model(fused, dropout)
        torch.manual_seed(2)  # the same dropout masks for both
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 2 * 2 * 7
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_disabled_and_merged_adapters_fall_back_to_pefts_forward():
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    plain, fused = _peft_model(False), _peft_model(True)
    with torch.no_grad():
        with plain.disable_adapter(), fused.disable_adapter():  # DPO's reference pass
            torch.testing.assert_close(plain(input_ids=ids).logits, fused(input_ids=ids).logits)
        with_adapters = fused(input_ids=ids).logits
        fused.merge_adapter()
        torch.testing.assert_close(fused(input_ids=ids).logits, with_adapters, rtol=1e-4, atol=1e-5)


def test_under_bf16_autocast_a_small_adapter_delta_is_not_swallowed():
    """Under bf16 autocast the base product comes out in bf16; the fused forward adds the adapter's delta in
    float32, so a delta far below bf16's resolution of the base output still arrives whole. (Summed in bf16,
    as before, it was rounded away: the bundled model's validation loss after 40 steps was 8% worse.)"""
    model = _peft_model(True)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.mul_(1e-3)  # a delta ~1e-4 of the base output, as early in training
        x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4))
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        exact = (x @ a.t() @ b.t()) * layer.scaling["default"]  # float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
            base = layer.base_layer(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out - base.float(), exact, rtol=0.02, atol=exact.abs().max().item() * 0.02)


def test_a_bf16_base_runs_without_autocast_too():
    """LoRA stores the frozen base in bf16 when training in bf16; a forward outside autocast (an evaluation
    loop of one's own) stays in bf16 and runs, and under autocast it gives nearly the same loss."""
    model = _peft_model(True)
    for name, parameter in model.named_parameters():
        if "lora_" not in name:
            parameter.data = parameter.data.to(torch.bfloat16)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = model(input_ids=ids, labels=ids).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(plain) and abs(plain.float() - autocast.float()) < 0.05 * autocast.float()
