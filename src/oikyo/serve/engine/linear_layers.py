"""The engine's linear layers: an ``nn.Linear`` that can use prepacked CPU weights and carry LoRA adapters.

:func:`prepare_linear_layers` swaps every ``nn.Linear`` of the engine's model for a
:class:`ServingLinear` sharing the same parameters (state dicts and tied weights are unchanged). It
does two things for inference:

- Packed weights (CPU, float32): the product uses a copy of the weight reordered once for a faster
  kernel. Decoding multiplies a few rows by every weight matrix at each step, where PyTorch's
  default path (MKL ``sgemm``) streams the weights inefficiently. Two forms:

  - ``panels``, on a CPU with AVX2 or AVX-512, with one torch thread or a kernel threaded on torch's
    OpenMP runtime: oikyo's native kernel (:mod:`oikyo.serve.engine.cpu_kernels`) computes decoding
    steps and prefills (up to 16 rows on one thread, 320 threaded: a few prompts); longer prefills
    keep PyTorch's product on the original weight. On SmolLM2-135M's linear layers at 8 rows, one
    thread: 44.7 ms a step against 56.0 for oneDNN and 92.1 for MKL.
  - ``packed``, otherwise: oneDNN's blocked layout, what ``torch.compile`` does on CPU with frozen
    weights; threaded, and about 1.5x MKL at 8 rows.

  Nothing is quantized or approximated: products and sums are float32; only the order of the
  additions inside each dot product differs from MKL's, so logits differ in the last bits (as they
  already do between a batch of 8 and a batch of 1), and greedy tokens equal Hugging Face
  ``generate``'s unless two candidates tie to within that rounding (tested on the tiny and the
  bundled model).
- ``half`` (the engine's ``weights="float16"``, opt-in): the native kernel's panels hold the weights
  rounded to float16, half the bytes a decoding step streams; each vector of weights is widened to
  float32 as it is loaded (F16C) and the products and sums stay float32. Rows beyond the kernel's
  (long prefills) keep the float32 weights. This one approximates: the weights lose their last 13
  mantissa bits. On the bundled SmolLM2-135M the greedy answers to bench_generate's 8 prompts (up to 64
  tokens each) equalled Hugging Face ``generate``'s in float32, and the engine ran 1.32x its float32
  speed at 8 rows (BENCHMARKS.md, twentieth session).
- ``adapters``: callables ``f(x, out) -> out`` applied after the base product, registered by
  :class:`oikyo.serve.engine.lora.MultiLoRA` (one per MultiLoRA using the model; each returns ``out``
  unchanged unless its own batch is active). A plain call costs less than a forward hook, which
  matters at 200+ linear layers per decoding step.

The packed copy comes on top of the original weights (kept, so the model's state dict and any
other use of it are unchanged): on CPU the linear weights take twice the memory. Pass
``packed_weights=False`` to the engine to avoid that for large models. Which form a model got is
:func:`prepare_linear_layers`' answer and the engine's ``linear_products`` statistic.
"""

from __future__ import annotations

import torch
from torch import nn

from oikyo.serve.engine.cpu_kernels import CPUKernels, load_kernels


HALF_UNAVAILABLE = ("float16 weights need oikyo's native base-product kernel built with F16C (a C compiler, an x86 "
                    "CPU with AVX2 or AVX-512, a float32 model on the CPU, one torch thread or the kernel "
                    "threaded on torch's OpenMP runtime, and OIKYO_CPU_KERNELS not set to 'torch'); serve with "
                    "float32 weights here")


def packing_available() -> bool:
    """True when torch has the oneDNN (mkldnn) linear ops used for packed weights."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class ServingLinear(nn.Linear):
    """An inference-only ``nn.Linear``: optional packed weight (see the module docstring), optional LoRA adapters.

    ``kernels``: pack the weight into the native kernel's panels; else ``pack``: into oneDNN's
    layout. The weight must not change after packing (the packed copy would not follow).
    """

    def __init__(self, linear: nn.Linear, pack: bool = False, batch_hint: int = 8, kernels: CPUKernels | None = None,
                 half: bool = False):
        nn.Module.__init__(self)  # no fresh parameters: share the original ones
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # Plain attributes (not buffers): packed copies must not enter state dicts.
        self.kernels = kernels if kernels is not None and CPUKernels.accepts(*self.parameters()) else None
        # half: the panels in float16 (weights="float16"); the kernel reads their dtype.
        self.panels = self.kernels.pack(linear.weight, half) if self.kernels is not None else None
        self.packed = (
            torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
            if pack and self.panels is None else None
        )
        self.adapters: list = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        if self.panels is not None and x.dtype == torch.float32 and not x.requires_grad:
            rows = x.numel() // self.in_features
            if self.kernels.linear_suits(rows) and x.is_contiguous():
                out = self.kernels.linear(x.view(rows, self.in_features), self.panels, self.out_features, self.bias)
                out = out.view(*x.shape[:-1], self.out_features)
        elif self.packed is not None and x.dtype == self.weight.dtype and not x.requires_grad:
            out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if out is None:
            out = nn.functional.linear(x, self.weight, self.bias)
        for apply in self.adapters:
            out = apply(x, out)
        return out


def prepare_linear_layers(model: nn.Module, pack: bool, batch_hint: int = 8, half: bool = False) -> str:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`ServingLinear`; returns how the float32 CPU
    ones compute their products: "native kernel", "native kernel, float16 weights", "onednn" or
    "pytorch" (see the module docstring).

    ``pack`` packs the float32 CPU layers: into the native kernel's panels when the kernels are built
    for AVX or AVX-512 (:attr:`CPUKernels.linear_available`) and torch has one thread or the kernel is
    threaded (:attr:`CPUKernels.threaded`), else for oneDNN when torch has it; other layers keep
    PyTorch's product. ``half``: the panels in float16 (the kernel's decoding steps stream half the
    bytes; rows beyond the kernel's, long prefills, keep the float32 weights); ValueError where the
    native kernel with F16C cannot be used.
    """
    kernels = load_kernels() if pack else None
    if kernels is not None and not (kernels.linear_available and (kernels.threaded or torch.get_num_threads() == 1)):
        kernels = None
    if half and (kernels is None or not kernels.half_available):
        raise ValueError(HALF_UNAVAILABLE)
    onednn = pack and packing_available()
    targets = [(name, module) for name, module in model.named_modules() if type(module) is nn.Linear]
    for name, module in targets:
        packable = pack and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32
        serving = ServingLinear(module, packable and onednn, batch_hint, kernels if packable else None, half)
        model.set_submodule(name, serving)
    if kernels is not None:
        return "native kernel, float16 weights" if half else "native kernel"
    return "onednn" if onednn else "pytorch"
