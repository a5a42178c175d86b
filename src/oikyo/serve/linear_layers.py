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
- ``folded`` (packed layers only): one of those adapter stacks may fold its LoRA ``B`` matrices into
  a second packed weight, ``[W | B_cat]`` of shape (out, in + R). When the stack says so (a
  decoding step of a batch with adapters, see :meth:`oikyo.serve.lora._AdapterModule.low_rank_input`),
  the layer widens its input with the stack's low-rank part, ``[x | (x @ A_cat.T) * row_mask]``,
  and one oneDNN product gives the base output plus every row's LoRA term. At 8 decoding rows a
  separate product with ``B`` (K = R, e.g. 64) streams its matrix at about half the rate of the
  packed base product; folded, ``B`` streams with ``W``. Prefills and batches without adapters use
  the plain packed weight. The fold is redone when the stack changes (an adapter loaded or
  evicted), which makes loading an adapter several times slower (repacking every adapted layer).

The packed copy comes on top of the original weights (kept, so the model's state dict and any
other use of it are unchanged): on CPU the linear weights take twice the memory, and three times
while adapters are loaded (the folded copy). Pass
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
        self.batch_hint = batch_hint
        self.packed = _pack(linear.weight.detach(), batch_hint) if pack else None
        self.adapters: list = []
        self.folded = None  # the adapter stack whose B matrices are folded into `packed_folded`, if any
        self.packed_folded = None

    def fold(self, stack, bt_cat: torch.Tensor) -> None:
        """Pack ``[W | bt_cat.T]`` so that ``stack`` (one of ``adapters``) can be applied inside the product.

        ``stack.low_rank_input(x)`` returns the (..., R) columns that widen the input, or None where
        the plain product followed by the stack's own call is the better choice; ``bt_cat`` is
        (R, out). Only packed layers fold.
        """
        self.packed_folded = _pack(torch.cat([self.weight.detach(), bt_cat.t()], dim=1), self.batch_hint)
        self.folded = stack

    def unfold(self) -> None:
        self.packed_folded = self.folded = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        applied = None
        if self.packed is not None and x.dtype == self.weight.dtype and not x.requires_grad:
            low = self.folded.low_rank_input(x) if self.folded is not None else None
            if low is not None:
                applied = self.folded
                out = torch.ops.mkldnn._linear_pointwise(
                    torch.cat([x, low], dim=-1), self.packed_folded, self.bias, "none", [], ""
                )
            else:
                out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        else:
            out = nn.functional.linear(x, self.weight, self.bias)
        for apply in self.adapters:
            if apply is not applied:  # a folded stack was applied by the product itself
                out = apply(x, out)
        return out


def _pack(weight: torch.Tensor, batch_hint: int):
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)


def prepare_linear_layers(model: nn.Module, pack: bool, batch_hint: int = 8) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`ServingLinear`; returns how many.

    ``pack`` packs the float32 CPU ones (see the module docstring); others keep PyTorch's product.
    """
    targets = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    for name, module in targets:
        packable = pack and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32
        model.set_submodule(name, ServingLinear(module, packable, batch_hint))
    return len(targets)
