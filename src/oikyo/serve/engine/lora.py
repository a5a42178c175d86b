"""Many LoRA adapters on one base model at once: each row of a batch uses its own adapter (or none).

The base model is loaded once and never modified. Each adapter is a peft folder
(``adapter_config.json`` + ``adapter_model.safetensors``); its ``lora_A`` / ``lora_B`` matrices are
read directly and, for every targeted linear layer, the matrices of all loaded adapters are
stacked::

    A_cat: (R, in)     rows [start, end) hold adapter a's A (r_a, in); R = sum of the ranks
    Bt_cat: (R, out)   rows [start, end) hold adapter a's B transposed (r_a, out)

After the layer's own product, each row's LoRA term is added to it in place, for the whole batch
in one call.

On CPU in float32 (the usual case there), a small compiled kernel, :mod:`oikyo.serve.engine.cpu_kernels`,
adds the terms of every decoding step and of a mixed batch's prefills: the same sums, each token
through its own adapter only, each adapter's matrices read once per layer in memory order. In the
decoding steps of four adapters on the bundled model it costs 0.4-0.65 of what the PyTorch products
below cost on the test machines, about what a plain read of the matrices costs (BENCHMARKS.md).

When every row uses the same adapter and the kernel does not apply (prefills, or no kernel), the
layer adds ``(x @ A.T) @ B.T * scaling`` of that adapter alone to its output in place (one
``addmm_`` with the scaling as its ``alpha``): peft's arithmetic without its two extra passes over
the output.

Without that kernel (no C compiler, another dtype or device, ``OIKYO_CPU_KERNELS=torch``), PyTorch
does a mixed batch this way. A decoding step (one token per row) uses the whole stack at once::

    low = x @ A_cat.T * row_mask           x: (tokens, in), low: (tokens, R)
    out += low @ Bt_cat                    out: (tokens, out), in place
    row_mask: (tokens, R), the row's adapter scaling (lora_alpha / r, or / sqrt(r) with rsLoRA)
              on that adapter's columns, 0 elsewhere (all 0: the base model)

Three operations per layer whatever the number of adapters. (peft's mixed-batch mode runs a gather
and two products per adapter instead; for decoding, a few rows, that measured slower here: the
extra products on masked columns cost less than the extra operations.) A prefill has many tokens
per row, where multiplying every token by every adapter would cost R / r times the work: there the
tokens are gathered per adapter and each group gets its own adapter's products.

The engine's layers (:class:`oikyo.serve.engine.linear_layers.ServingLinear`) call the adapters directly;
on any other ``nn.Linear`` a forward hook (a public PyTorch extension point) does. No library code
is changed.

Supported: plain LoRA on linear layers (any rank, alpha, rsLoRA, alpha patterns). Adapters with
DoRA, trained biases, ``modules_to_save``, embedding or convolution LoRA raise
:class:`AdapterError`; merge such adapters into a model instead.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from oikyo.serve.engine.linear_layers import ServingLinear
from oikyo.serve.engine.cpu_kernels import CPUKernels, TokenPlan, load_kernels

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# peft saves "base_model.model.<module path>.lora_A.weight" (older versions keep the adapter name
# before ".weight").
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


class AdapterError(ValueError):
    """An adapter folder that cannot be served (missing files or an unsupported peft feature)."""


@dataclass
class ModuleWeights:
    """One adapter's LoRA matrices for one linear module."""

    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scaling: float


def read_adapter_config(adapter_dir: str | Path) -> dict:
    """The folder's ``adapter_config.json``, checked to describe a LoRA adapter this module can serve."""
    folder = Path(adapter_dir)
    if (folder / CONFIG_FILE).is_file() and not (folder / WEIGHTS_FILE).is_file():
        from oikyo.models.loading import PickledWeights, require_safetensors

        try:
            require_safetensors(folder, "adapter")
        except PickledWeights as error:
            raise AdapterError(str(error)) from None
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise AdapterError(f"{folder} is not a peft adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    unsupported = {
        "peft_type": config.get("peft_type", "LORA") != "LORA",
        "use_dora": bool(config.get("use_dora")),
        "bias": config.get("bias", "none") != "none",
        "lora_bias": bool(config.get("lora_bias")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "trainable_token_indices": bool(config.get("trainable_token_indices")),
    }
    found = [name for name, bad in unsupported.items() if bad]
    if found:
        raise AdapterError(
            f"adapter {folder} uses {', '.join(found)}, which multi-adapter serving does not support; "
            "merge it into the model and serve the merged model instead"
        )
    return config


def _pattern_value(patterns: dict, module: str, default):
    """peft's rank_pattern / alpha_pattern lookup: a key matches the end of the module path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(adapter_dir: str | Path, model: nn.Module) -> dict[str, ModuleWeights]:
    """The LoRA matrices of an adapter folder per module path of ``model``, in the model's dtype and device."""
    from safetensors.torch import load_file

    config = read_adapter_config(adapter_dir)
    tensors = load_file(str(Path(adapter_dir) / WEIGHTS_FILE))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterError(
                f"adapter {adapter_dir}: unsupported tensor {key!r} (only lora_A/lora_B of linear layers)"
            )
        pairs.setdefault(match["module"], {})[match["which"]] = tensor
    reference = next(model.parameters())
    weights = {}
    for module_path, pair in pairs.items():
        module = _linear(model, module_path, adapter_dir)
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {adapter_dir}: {module_path} lacks lora_A or lora_B")
        a, b = pair["A"], pair["B"]
        r = a.shape[0]
        if a.shape != (r, module.in_features) or b.shape != (module.out_features, r):
            raise AdapterError(
                f"adapter {adapter_dir}: {module_path} shapes {tuple(a.shape)}, {tuple(b.shape)} do not fit the model"
            )
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module_path, config.get("lora_alpha", 8))
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        weights[module_path] = ModuleWeights(
            a=a.to(device=reference.device, dtype=reference.dtype),
            b=b.to(device=reference.device, dtype=reference.dtype),
            scaling=float(scaling),
        )
    if not weights:
        raise AdapterError(f"adapter {adapter_dir} holds no LoRA weights")
    return weights


def _linear(model: nn.Module, path: str, adapter_dir) -> nn.Linear:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise AdapterError(f"adapter {adapter_dir} targets {path!r}, which this model does not have") from None
    if not isinstance(module, nn.Linear):
        raise AdapterError(
            f"adapter {adapter_dir} targets {path!r}, a {type(module).__name__} (only nn.Linear is supported)"
        )
    return module


class _Batch:
    """Which adapter each row of the current forward uses; row masks are built once per step per layout."""

    def __init__(self, rows: list[str | None]):
        self.rows = rows
        self.single = rows[0] if rows and all(r == rows[0] for r in rows) else None
        self.any = any(r is not None for r in rows)
        self.masks: dict[tuple, torch.Tensor] = {}
        self.plans: dict[tuple, TokenPlan] = {}
        self._groups: tuple[torch.Tensor, list[tuple[str, int, int]]] | None = None

    def groups(self, tokens_per_row: int, device) -> tuple[torch.Tensor, list[tuple[str, int, int]]]:
        """Indices of the tokens that use an adapter, each adapter's tokens contiguous, and each
        adapter's [start, end) range in that order (computed once per forward)."""
        if self._groups is None:
            index, segments = [], []
            for name, row in sorted((name, i) for i, name in enumerate(self.rows) if name is not None):
                if not segments or segments[-1][0] != name:
                    segments.append([name, len(index), len(index)])
                index.extend(range(row * tokens_per_row, (row + 1) * tokens_per_row))
                segments[-1][2] = len(index)
            self._groups = (torch.tensor(index, device=device), [tuple(s) for s in segments])
        return self._groups

    def plan(self, layout: tuple, tokens_per_row: int) -> TokenPlan:
        """The native kernel's arrays for a layout, built once per forward."""
        key = (layout, tokens_per_row)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = TokenPlan(layout, self.rows, tokens_per_row)
        return plan

    def mask(self, layout: tuple, tokens_per_row: int, like: torch.Tensor) -> torch.Tensor:
        """(tokens, R): the row's adapter scaling on its adapter's columns of the layout, 0 elsewhere."""
        key = (layout, tokens_per_row)
        cached = self.masks.get(key)
        if cached is None:
            columns = {name: (start, end, scaling) for name, start, end, scaling in layout}
            mask = torch.zeros(len(self.rows), layout[-1][2])
            for i, name in enumerate(self.rows):
                if name in columns:
                    start, end, scaling = columns[name]
                    mask[i, start:end] = scaling
            cached = mask.repeat_interleave(tokens_per_row, dim=0).to(device=like.device, dtype=like.dtype)
            self.masks[key] = cached
        return cached


class _AdapterModule:
    """The loaded adapters' matrices for one linear module, stacked, applied after the module's own product.

    On a :class:`ServingLinear` (the engine's layers) the module calls it directly; on any other
    ``nn.Linear`` a forward hook does.
    """

    def __init__(self, owner: MultiLoRA, module: nn.Linear):
        self.owner = owner
        self.entries: dict[str, ModuleWeights] = {}
        self.layout: tuple = ()  # ((name, start, end, scaling), ...) in stacking order
        self.a_cat = self.bt_cat = None  # (R, in) and B_cat transposed (R, out), contiguous
        self.native: tuple[int, int] | None = None  # their data pointers, when the native kernel can read them
        self.module = module
        if isinstance(module, ServingLinear):
            module.adapters.append(self)  # called directly by its forward: cheaper than a hook
            self.handle = None
        else:
            self.handle = module.register_forward_hook(lambda _module, inputs, output: self(inputs[0], output))

    def detach(self) -> None:
        """Stop applying adapters to the module."""
        if self.handle is not None:
            self.handle.remove()
        else:
            self.module.adapters.remove(self)

    def add(self, name: str, weights: ModuleWeights) -> None:
        self.entries[name] = weights
        self._rebuild()

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)
        self._rebuild()

    def _rebuild(self) -> None:
        names = list(self.entries)
        if not names:
            self.a_cat = self.bt_cat = self.native = None
            self.layout = ()
            return
        self.a_cat = torch.cat([self.entries[n].a for n in names])
        self.bt_cat = torch.cat([self.entries[n].b for n in names], dim=1).t().contiguous()
        layout, start = [], 0
        for n in names:
            r = self.entries[n].a.shape[0]
            layout.append((n, start, start + r, self.entries[n].scaling))
            start += r
        self.layout = tuple(layout)
        readable = CPUKernels.accepts(self.a_cat, self.bt_cat)
        self.native = (self.a_cat.data_ptr(), self.bt_cat.data_ptr()) if readable else None

    def __call__(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The module's output plus each row's LoRA term. x: (batch, seq, in); output: (batch, seq, out)."""
        batch = self.owner.batch
        if batch is None or not batch.any:
            return output
        x2 = x.reshape(-1, x.shape[-1])  # (tokens, in)
        out2 = output.view(-1, output.shape[-1])  # (tokens, out), shares output's memory
        tokens_per_row = x2.shape[0] // len(batch.rows)
        kernel = self.owner.kernel
        if (
            kernel is not None
            and self.native is not None
            and (batch.single is None or tokens_per_row == 1)  # a mixed batch, or a decoding step
            and kernel.accepts(x2, out2)
            and kernel.suits(x2.shape[0])
        ):
            kernel.lora_add(x2, out2, self.native, batch.plan(self.layout, tokens_per_row))  # adds in place
            return output
        if batch.single is not None:
            weights = self.entries.get(batch.single)
            if weights is not None:
                # peft's arithmetic, lora_B(lora_A(x)) * scaling, added to the output in place.
                out2.addmm_(nn.functional.linear(x2, weights.a), weights.b.t(), alpha=weights.scaling)
            return output
        if tokens_per_row > 1:
            return self._grouped(batch, x2, out2, tokens_per_row, output)
        # Decoding a mixed batch: every row through every adapter's A (cheap: R is small), keep only
        # its own adapter's columns, scaled, and add their product with B to the output in place.
        low = nn.functional.linear(x2, self.a_cat)  # (tokens, R)
        low.mul_(batch.mask(self.layout, tokens_per_row, low))
        out2.addmm_(low, self.bt_cat)  # (tokens, out) += (tokens, R) @ (R, out)
        return output

    def _grouped(self, batch: _Batch, x2, out2, tokens_per_row: int, output):
        """Prefill of a mixed batch (many tokens per row): the masked form would multiply every token by
        every adapter; instead gather each adapter's tokens and apply that adapter alone (peft's arithmetic)."""
        index, segments = batch.groups(tokens_per_row, x2.device)
        grouped = x2.index_select(0, index)  # (m, in): the tokens that use an adapter, grouped
        delta = torch.zeros((grouped.shape[0], out2.shape[1]), dtype=out2.dtype, device=out2.device)
        for name, start, end in segments:
            weights = self.entries.get(name)
            if weights is not None:  # else that adapter does not target this module
                low = nn.functional.linear(grouped[start:end], weights.a)
                delta[start:end] = nn.functional.linear(low, weights.b) * weights.scaling
        out2.index_add_(0, index, delta)
        return output


class MultiLoRA:
    """The adapters loaded on one base model, least recently used first, at most ``max_adapters``.

    ``load`` / ``unload`` change the stacks; ``set_batch(rows)`` before a forward says which adapter
    each row uses (None for the base model); ``set_batch(None)`` turns the adapters off.
    """

    def __init__(self, model: nn.Module, max_adapters: int = 8):
        if max_adapters < 1:
            raise ValueError("max_adapters must be at least 1")
        self.model = model
        self.max_adapters = max_adapters
        self.loaded: OrderedDict[str, Path] = OrderedDict()  # name -> folder, least recently used first
        self.batch: _Batch | None = None
        self._modules: dict[str, _AdapterModule] = {}
        self._adapter_modules: dict[str, list[str]] = {}
        self.kernel: CPUKernels | None = None  # the native kernels, looked up at the first load
        self._kernel_checked = False

    def __contains__(self, name: str) -> bool:
        return name in self.loaded

    @property
    def products(self) -> str | None:
        """How LoRA terms are computed: "native kernel", "pytorch", or None before the first adapter load."""
        if not self._kernel_checked:
            return None
        return "native kernel" if self.kernel is not None else "pytorch"

    def touch(self, name: str) -> None:
        """Mark ``name`` as just used (last in the eviction order)."""
        self.loaded.move_to_end(name)

    def evictable(self, pinned: set[str]) -> list[str]:
        """Loaded adapters that may be unloaded (not in ``pinned``), least recently used first."""
        return [name for name in self.loaded if name not in pinned]

    def load(self, name: str, adapter_dir: str | Path, pinned: set[str] = frozenset()) -> list[str]:
        """Load an adapter, first evicting least recently used ones beyond ``max_adapters``; returns those evicted.

        Raises RuntimeError when the limit is reached and every loaded adapter is ``pinned`` (in use).
        """
        if name in self.loaded:
            self.unload(name)
        evicted = []
        while len(self.loaded) >= self.max_adapters:
            candidates = self.evictable(pinned)
            if not candidates:
                raise RuntimeError(f"all {self.max_adapters} adapter slots are in use")
            self.unload(candidates[0])
            evicted.append(candidates[0])
        weights = read_adapter(adapter_dir, self.model)
        if not self._kernel_checked:
            self.kernel, self._kernel_checked = load_kernels(), True
        for module_path, module_weights in weights.items():
            hooked = self._modules.get(module_path)
            if hooked is None:
                hooked = self._modules[module_path] = _AdapterModule(self, self.model.get_submodule(module_path))
            hooked.add(name, module_weights)
        self._adapter_modules[name] = list(weights)
        self.loaded[name] = Path(adapter_dir)
        return evicted

    def unload(self, name: str) -> None:
        """Drop an adapter's matrices (modules left without adapters stop applying any)."""
        self.loaded.pop(name, None)
        for module_path in self._adapter_modules.pop(name, []):
            hooked = self._modules[module_path]
            hooked.remove(name)
            if not hooked.entries:
                hooked.detach()
                del self._modules[module_path]

    def set_batch(self, rows: list[str | None] | None) -> None:
        """Say which adapter each row of the next forward uses (None: base model; rows=None: no LoRA at all)."""
        self.batch = _Batch(rows) if rows is not None and self.loaded else None
