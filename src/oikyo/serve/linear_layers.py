"""The engine's linear layers: an ``nn.Linear`` that can use prepacked CPU weights and carry LoRA adapters.

:func:`prepare_linear_layers` swaps every ``nn.Linear`` of the engine's model for a
:class:`ServingLinear` sharing the same parameters (state dicts and tied weights are unchanged). It
does two things for inference:

- ``packed`` (CPU, float32): the product uses a copy of the weight reordered once into oneDNN's
  blocked layout, what ``torch.compile`` does on CPU with frozen weights. Decoding multiplies a few
  rows by every weight matrix at each step, where PyTorch's default path (MKL ``sgemm``) streams
  the weights inefficiently; prepacked oneDNN is markedly faster on the 2-core test machine (about
  1.6x on SmolLM2-135M's linear layers at 8 rows). Nothing is quantized or approximated: products
  and sums are float32; only the order of the additions inside each dot product differs from
  MKL's, so logits differ in the last bits (as they already do between a batch of 8 and a batch of
  1), and greedy tokens equal Hugging Face ``generate``'s unless two candidates tie to within that
  rounding (tested on the tiny and the bundled model).
- ``adapters``: callables ``f(x, out) -> out`` applied after the base product, registered by
  :class:`oikyo.serve.lora.MultiLoRA` (one per MultiLoRA using the model; each returns ``out``
  unchanged unless its own batch is active). A plain call costs less than a forward hook, which
  matters at 200+ linear layers per decoding step.

The packed copy comes on top of the original weights (kept, so the model's state dict and any
other use of it are unchanged): on CPU the linear weights take twice the memory. Pass
``packed_weights=False`` to the engine to avoid that for large models.
"""

from __future__ import annotations

import torch
from torch import nn


def packing_available() -> bool:
    """True when torch has the oneDNN (mkldnn) linear ops used for packed weights."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class ServingLinear(nn.Linear):
    """An inference-only ``nn.Linear``: optional oneDNN-prepacked weight, optional LoRA adapters.

    The weight must not change after packing (the packed copy would not follow).
    """

    def __init__(self, linear: nn.Linear, pack: bool = False, batch_hint: int = 8):
        nn.Module.__init__(self)  # no fresh parameters: share the original ones
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # Plain attributes (not buffers): the opaque oneDNN tensor must not enter state dicts.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint) if pack else None
        self.adapters: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.dtype == self.weight.dtype and not x.requires_grad:
            out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        else:
            out = nn.functional.linear(x, self.weight, self.bias)
        for apply in self.adapters:
            out = apply(x, out)
        return out


def prepare_linear_layers(model: nn.Module, pack: bool, batch_hint: int = 8) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`ServingLinear`; returns how many.

    ``pack`` packs the float32 CPU ones (see the module docstring); others keep PyTorch's product.
    """
    targets = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    for name, module in targets:
        packable = pack and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32
        model.set_submodule(name, ServingLinear(module, packable, batch_hint))
    return len(targets)
