"""The engine's own forward passes for Llama-family models on the CPU: transformers' layers, called directly.

A decoding step feeds one token per sequence through every layer; a prefill feeds the new
sequences' prompts; a mixed step feeds both at once, so the weights are read once for both. Their
arithmetic is the weight products (:mod:`oikyo.serve.engine.linear_layers`); around them,
transformers' ``forward`` spends time in per-call machinery (keyword plumbing, output recording,
mask and cache helpers, norms and rotations made of several operators each) that costs the same
whether a step carries one row or thirty-two. :class:`DecoderForward` runs the same modules, with
the same weights, in the order the model's own ``forward`` does, for the families whose layers it
knows:

    h = embed(tokens)
    for each layer:
        x = rms_norm(h)
        q, k, v = q_proj(x), k_proj(x), v_proj(x)        (Qwen3: q_norm, k_norm per head)
        q, k = rotary(q), rotary(k)                      (the model's own rotary_emb: any rope scaling)
        write k, v into the slot KV cache
        h = h + o_proj(attention(q, cached keys, cached values))
        h = h + down_proj(silu(gate_proj(rms_norm(h))) * up_proj(...))
    logits = lm_head(rms_norm(h))                        (a prefill: at each prompt's last token only)

Every linear layer is the model's own module, so LoRA adapters apply as in the model's forward.
Between the products, oikyo's native kernels (:mod:`oikyo.serve.engine.cpu_kernels`) do the small
parts in one call each: the residual add fused into the next RMS norm, the rotation fused with the
cache write, and a decoding step's attention over each row's own cached length (no mask). A
prefill's attention is PyTorch's ``scaled_dot_product_attention``, causal within each prompt (the
prompts are right-padded, so causality alone keeps real tokens off the padding). Without the
native kernels, decoding steps run the same sequence in PyTorch operators (SDPA with the cache's
mask) and prefills go to the model's forward.

Measured on the bundled SmolLM2-135M, 8 rows, 2 threads, an AMD EPYC with AVX2 (BENCHMARKS.md,
nineteenth session): a decoding step's work outside the weight products fell from about 30 ms
(transformers' forward, 6 ms of it attention) to about 10 ms, and the engine went from about 100 to
130-148 tokens/s (8 rows x 64 tokens, in process).

Used for float32 models on the CPU whose ``model_type`` is in :data:`FAMILIES` and whose layers have
the expected parts, every layer attending to the whole context (no sliding window), and the plain
RMS norm and SiLU MLP; otherwise the engine calls the model's ``forward``, as it does for a prefill
that scores the prompt (logits at every position). Greedy tokens equal the model's own forward's
(tested per family on tiny models, and on the bundled model against Hugging Face ``generate``); the
logits differ only in the order of float32 additions. ``OIKYO_ENGINE_FORWARD=transformers`` turns it
off.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # the same in every family here

from oikyo.serve.engine.cpu_kernels import CPUKernels, load_kernels
from oikyo.serve.engine.kv_cache import SlotKVCache

log = logging.getLogger(__name__)

ENV = "OIKYO_ENGINE_FORWARD"
# model_type values whose decoder layers have the structure above (Qwen3 adds q_norm/k_norm).
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


class DecoderForward:
    """Decoding steps and prefills of a supported model (see the module docstring); build it with :meth:`build`."""

    def __init__(self, model: nn.Module, kernels: CPUKernels | None):
        config = model.config
        self.model = model
        self.inner = model.model
        self.kernels = kernels
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.group = self.heads // self.kv_heads
        self.layers = list(self.inner.layers)

    @classmethod
    def build(cls, model: nn.Module) -> DecoderForward | None:
        """The forward passes for ``model``, or None when the model's own must be used (the reason is logged)."""
        choice = os.environ.get(ENV, "auto").strip().lower()
        if choice not in ("auto", "transformers"):
            log.warning("%s=%r is not 'auto' or 'transformers'; using 'auto'", ENV, choice)
        if choice == "transformers":
            return None
        reason = unsupported_reason(model)
        if reason:
            log.info("the engine uses the model's own forward: %s", reason)
            return None
        return cls(model, load_kernels())

    @property
    def prefills(self) -> bool:
        """Whether :meth:`prefill` runs here (it needs the native kernels)."""
        return self.kernels is not None

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
               cache: SlotKVCache) -> torch.Tensor:
        """Logits (n, vocab) for ``input_ids`` (n, 1) at ``positions`` (n,), after :meth:`SlotKVCache.decode`
        announced the step (``mask`` is its return value, used only without the native kernels)."""
        h = self.inner.embed_tokens(input_ids[:, 0])  # (n, hidden): the residual stream
        cos, sin = self.inner.rotary_emb(h, positions[:, None])  # (n, 1, head_dim): the model's own rope
        if self.kernels is not None:  # h is float32 on the CPU (unsupported_reason), as the kernels need
            positions = positions.contiguous()
            return self.model.lm_head(self._native(h, cos, sin, cache.step.rows, positions, cache,
                                                   decoding=(positions + 1)))
        return self._torch(h, cos, sin, mask, cache)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, lengths: torch.Tensor, cache: SlotKVCache) -> torch.Tensor:
        """Logits (k, vocab) at each prompt's last token for ``input_ids`` (k, q), right-padded prompts of
        ``lengths`` (k,) tokens, after :meth:`SlotKVCache.prefill` announced their slots. Needs :attr:`prefills`."""
        return self._with_prompts(input_ids, lengths, cache)

    @torch.inference_mode()
    def mixed(self, input_ids: torch.Tensor, positions: torch.Tensor, prompt_ids: torch.Tensor, lengths: torch.Tensor,
              cache: SlotKVCache) -> torch.Tensor:
        """A decoding step and a prefill in one forward, so the weights are read once for both: the n
        decoding rows' ``input_ids`` (n,) at ``positions`` (n,) in slots 0..n-1, and right-padded
        ``prompt_ids`` (k, q) of ``lengths`` (k,) tokens, after :meth:`SlotKVCache.mixed` announced the
        step. Returns logits (n + k, vocab): each decoding row's, then each prompt's last token's.
        Needs :attr:`prefills`."""
        return self._with_prompts(prompt_ids, lengths, cache, input_ids, positions)

    def _with_prompts(self, prompt_ids: torch.Tensor, lengths: torch.Tensor, cache: SlotKVCache,
                      input_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """A prefill of ``prompt_ids`` (k, q) into ``cache.step.slots``, after the decoding rows
        ``input_ids`` at ``positions`` (n,) when given (a mixed step): logits (n + k, vocab)."""
        rows, width = prompt_ids.shape
        device = prompt_ids.device
        tokens = prompt_ids.reshape(-1)
        token_positions = torch.arange(width, device=device).repeat(rows)  # (rows * width,)
        slots = cache.step.slots.repeat_interleave(width)
        n, decoding = 0, None
        if input_ids is not None:  # the decoding rows come first, in slots 0..n-1
            n, decoding = input_ids.shape[0], (positions + 1).contiguous()
            tokens = torch.cat([input_ids, tokens])
            token_positions = torch.cat([positions, token_positions])
            slots = torch.cat([cache.step.rows, slots])
        h = self.inner.embed_tokens(tokens)  # (n + rows * width, hidden)
        cos, sin = self.inner.rotary_emb(h, token_positions[None, :])  # (1, n + rows * width, head_dim)
        h = self._native(h, cos, sin, slots.contiguous(), token_positions.contiguous(), cache, decoding=decoding,
                         prompts=(rows, width))
        keep = n + torch.arange(rows, device=device) * width + lengths - 1  # each prompt's last token
        if n:
            keep = torch.cat([torch.arange(n, device=device), keep])
        return self.model.lm_head(h[keep])

    def _native(self, h, cos, sin, slots, positions, cache: SlotKVCache, decoding: torch.Tensor | None = None,
                prompts: tuple[int, int] | None = None) -> torch.Tensor:
        """Every layer, with oikyo's kernels between the products, for n tokens: each goes to column
        ``positions[i]`` of slot ``slots[i]`` of the cache. Decoding rows (``decoding``: each one's
        cached length, the first ``len(decoding)`` tokens) attend over the cache; the prompts that
        follow them (``prompts``: rows, width) attend within each prompt. Returns the last norm's
        output (n, hidden)."""
        kernels, n, d = self.kernels, h.shape[0], self.head_dim
        cos, sin = cos.reshape(n, d).contiguous(), sin.reshape(n, d).contiguous()
        h = h.contiguous()  # the residual stream, updated in place by add_rms_norm
        x = _norm(kernels, h, None, self.layers[0].input_layernorm)
        for index, layer in enumerate(self.layers):
            attention, buffers = layer.self_attn, cache.layers[index]
            q = attention.q_proj(x).contiguous().view(n, self.heads, d)
            k = attention.k_proj(x).contiguous().view(n, self.kv_heads, d)
            v = attention.v_proj(x).contiguous().view(n, self.kv_heads, d)
            if hasattr(attention, "q_norm"):  # Qwen3: RMS norm per head before the rotation
                q = _norm(kernels, q.view(n * self.heads, d), None, attention.q_norm).view(n, self.heads, d)
                k = _norm(kernels, k.view(n * self.kv_heads, d), None, attention.k_norm).view(n, self.kv_heads, d)
            if not buffers.is_initialized:  # the cache's first forward: allocate (slots, kv_heads, capacity, d)
                buffers.lazy_initialization(k.view(n, self.kv_heads, 1, d), v.view(n, self.kv_heads, 1, d))
            kernels.rope_cache(q, k, v, cos, sin, slots, positions, buffers.keys, buffers.values)
            parts = []
            if decoding is not None:
                m = decoding.shape[0]
                parts.append(kernels.decode_attention(q[:m].view(m, self.kv_heads, self.group, d), buffers.keys,
                                                      buffers.values, decoding, cache.step.kv_length,
                                                      attention.scaling).view(m, self.heads * d))
            if prompts is not None:
                o = self._prompt_attention(q[n - prompts[0] * prompts[1]:], buffers, cache.step.slots, *prompts,
                                           attention.scaling)
                parts.append(o.reshape(-1, self.heads * d))
            o = parts[0] if len(parts) == 1 else torch.cat(parts)
            x = _norm(kernels, h, attention.o_proj(o), layer.post_attention_layernorm)
            mlp = layer.mlp
            following = self.layers[index + 1].input_layernorm if index + 1 < len(self.layers) else self.inner.norm
            x = _norm(kernels, h, mlp.down_proj(F.silu(mlp.gate_proj(x)).mul_(mlp.up_proj(x))), following)
        return x

    def _prompt_attention(self, q, buffers, slots, rows: int, width: int, scale: float) -> torch.Tensor:
        """Causal attention within each prompt: q (rows * width, heads, d) against the keys and values
        just written to the prompts' slots. Returns (rows, width, heads, d)."""
        d = self.head_dim
        keys = buffers.keys[slots, :, :width]  # (rows, kv_heads, width, d)
        values = buffers.values[slots, :, :width]
        q = q.view(rows, width, self.heads, d).transpose(1, 2)  # (rows, heads, width, d)
        o = F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=scale, enable_gqa=True)
        return o.transpose(1, 2)

    def _torch(self, h, cos, sin, mask, cache: SlotKVCache) -> torch.Tensor:
        """The step in PyTorch operators (no native kernels): the same modules (norms included) and
        transformers' rotation, SDPA with the cache's mask."""
        n, d = h.shape[0], self.head_dim
        cos, sin = cos.view(n, d), sin.view(n, d)  # apply_rotary_pos_emb broadcasts them over the heads
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(h)
            q = attention.q_proj(x).view(n, self.heads, d)
            k = attention.k_proj(x).view(n, self.kv_heads, d)
            v = attention.v_proj(x).view(n, self.kv_heads, 1, d)
            if hasattr(attention, "q_norm"):
                q, k = attention.q_norm(q), attention.k_norm(k)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            # Writes column positions[b] of slot b; returns (n, kv_heads, T, d) views of the buffers.
            keys, values = cache.layers[index].update(k.view(n, self.kv_heads, 1, d), v)
            q = q.view(n, self.kv_heads, self.group, d)  # query heads grouped by the key/value head they share
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attention.scaling)
            h = h + attention.o_proj(o.reshape(n, self.heads * d))
            x = layer.post_attention_layernorm(h)
            mlp = layer.mlp
            h = h + mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
        return self.model.lm_head(self.inner.norm(h))


def unsupported_reason(model: nn.Module) -> str | None:
    """Why :class:`DecoderForward` cannot run ``model`` (None: it can)."""
    config = model.config
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        return f"model type {kind!r} is not one of {', '.join(FAMILIES)}"
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        return f"the model is {param.dtype} on {param.device.type} (the step is for float32 on the CPU)"
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, part) for part in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "the model lacks the expected embed_tokens, layers, norm or rotary_emb"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act is {getattr(config, 'hidden_act', None)!r}, not 'silu'"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return "some layers use sliding-window attention"
    if layer_types is None and getattr(config, "sliding_window", None) is not None \
            and getattr(config, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    for layer in inner.layers:
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        parts = [getattr(attention, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
        parts += [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if any(not isinstance(part, nn.Linear) for part in parts):
            return "a layer lacks the expected q/k/v/o and gate/up/down projections"
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [attention.q_norm, attention.k_norm] if hasattr(attention, "q_norm") else []
        if any(not _plain_rms_norm(norm) for norm in norms) or not hasattr(attention, "scaling"):
            return "a layer's norms are not the plain RMS norm"
    if not _plain_rms_norm(inner.norm):
        return "the final norm is not the plain RMS norm"
    return None


def _plain_rms_norm(module: nn.Module) -> bool:
    # transformers' Llama/Mistral/Qwen RMS norms: weight * x / sqrt(mean(x^2) + eps), no offset.
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon") \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


def _norm(kernels: CPUKernels, h: torch.Tensor, delta: torch.Tensor | None, module: nn.Module) -> torch.Tensor:
    """``h += delta`` in place (when given), then ``module``'s RMS norm of ``h``, by the native kernel."""
    return kernels.add_rms_norm(h, None if delta is None else delta.contiguous(), module.weight,
                                module.variance_epsilon)
