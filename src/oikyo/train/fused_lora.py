"""A faster forward for peft's LoRA linear layers during training: the adapter's product, its scaling
and the sum with the base output in one GEMM.

peft computes ``result = base(x) + lora_B(lora_A(dropout(x))) * scaling``: besides the two small
products, that is a multiplication and an addition over the full ``(tokens, out_features)`` output,
each a pass through memory, and their backward passes again. On a CPU these element-wise passes
took about a quarter of a LoRA training step on the bundled model (profiled: 26% of the time in
``aten::mul`` and ``aten::add``). :func:`fuse_lora_layers` gives each plain LoRA linear layer a forward
that computes the same value with ``base(x).addmm_(lora_A(dropout(x)), lora_B.T, alpha=scaling)``:
the scaling and the sum happen inside the matrix product, in place in the base output.

The weights, the state dict, saving, merging and every other peft feature are unchanged; a layer
falls back to peft's own forward whenever the fused one does not apply (adapters disabled, as for
DPO's reference pass, or merged; several active adapters; DoRA and other variants; extra arguments).
Only layers whose base is a plain ``nn.Linear`` are fused (not 4-bit QLoRA layers).
"""

from __future__ import annotations

import types


def _fused_forward(self, x, *args, **kwargs):
    """``base(x) + scaling * lora_B(lora_A(dropout(x)))`` with the last two steps inside one addmm."""
    import torch
    from torch.nn import functional as F

    active = self.active_adapters
    if (
        args
        or kwargs
        or self.disable_adapters
        or self.merged
        or len(active) != 1
        or active[0] not in self.lora_A
        or active[0] in self.lora_variant
    ):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    base = self.base_layer
    result = F.linear(x, base.weight, base.bias)
    lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
    if result.dtype != lora_a.dtype and torch.is_autocast_enabled(result.device.type):
        # Under bf16 autocast the base product comes out in bf16, whose 8-bit mantissa would swallow the
        # adapter's small delta (early in training it is far below 1/256 of the base output): the sum is
        # taken in the adapter's float32. Measured on the bundled model, 40 quickstart steps: validation
        # loss 0.221 summed in bf16 against 0.205 in float32 training; see docs/training.md. (Without
        # autocast a bf16 model computes in bf16 throughout, as the caller asked.)
        result = result.to(lora_a.dtype)
    hidden = F.linear(self.lora_dropout[name](x.to(lora_a.dtype)), lora_a)  # (..., rank)
    # In place: the base product's backward needs x and the weight, not its output, so adding into
    # that output is safe for autograd and saves writing a second (tokens, out_features) tensor.
    result.view(-1, result.shape[-1]).addmm_(hidden.reshape(-1, hidden.shape[-1]).to(result.dtype),
                                            lora_b.t().to(result.dtype), alpha=self.scaling[name])
    return result


def fuse_lora_layers(model) -> int:
    """Give every plain LoRA linear layer of a peft model the fused forward; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from torch import nn

    fused = 0
    for module in model.modules():
        if isinstance(module, LoraLinear) and type(module.base_layer) is nn.Linear:
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused
