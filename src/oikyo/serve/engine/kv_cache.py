"""Slot KV cache: preallocated key/value buffers with one row ("slot") per sequence in flight.

Continuous batching decodes sequences of different lengths together and lets them join or leave
the batch between steps. Left padding would shift every sequence whenever a longer one joins;
instead each sequence owns a slot and keeps its own positions ``0..len-1``::

    keys[layer], values[layer]   (slots, kv_heads, capacity, head_dim), allocated once, grown rarely
    lengths (engine side)         tokens of each slot already written

Two kinds of step, each announced with one call before the model's forward:

- :meth:`SlotKVCache.prefill` (``rows`` new sequences, right-padded to ``q`` tokens): each layer
  writes its keys into columns ``[0, q)`` of the given slots and attends over the new keys alone
  (the slots start empty), with a causal mask that also hides each row's padding.
- :meth:`SlotKVCache.decode` (one token for each of the ``n`` active sequences): row ``b`` writes
  its key at its own position ``positions[b]`` of slot ``b`` and attends over columns ``[0, T)``,
  ``T = max(positions) + 1``, with a mask hiding the columns past its own position (stale keys of
  an earlier, longer occupant, or padding written during its prefill). Active sequences always
  occupy slots ``0..n-1`` (:meth:`SlotKVCache.move` refills a finished sequence's slot with the last
  one), so decode reads plain slices of the buffers: no gather, no concatenation, no copy.

oikyo's own forward (:mod:`oikyo.serve.engine.decoder`) also runs a third kind, announced by
:meth:`SlotKVCache.mixed`: a decoding step of slots ``0..n-1`` and a prefill of new prompts into the
slots after them, in one forward. The model's own ``forward`` never sees it.

The masks are 4-D, so transformers uses them as given (``(batch, 1, q, kv)``, boolean for SDPA,
additive float for eager attention). This suits decoder models whose attention layers all attend
to the full context (Llama, Qwen2, Mistral, Phi-3, ...); sliding-window layers would need their own
masks and are not supported.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

# Capacity grows in steps of this many positions, so the buffers are reallocated rarely.
CAPACITY_STEP = 256


class SlotLayer(CacheLayerMixin):
    """The key/value buffers of one attention layer; the owning :class:`SlotKVCache` says what a step writes."""

    is_sliding = False  # read by transformers' mask helpers: this layer attends to the full context

    def __init__(self, owner: SlotKVCache):
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        # Head counts, head size, dtype and device come from the first keys this layer sees.
        self.keys = self._empty(key_states, self.owner.slots, self.owner.capacity)
        self.values = self._empty(value_states, self.owner.slots, self.owner.capacity)
        self.is_initialized = True

    @staticmethod
    def _empty(like: torch.Tensor, slots: int, capacity: int) -> torch.Tensor:
        # like: (batch, kv_heads, q, head_dim) -> (slots, kv_heads, capacity, head_dim)
        return torch.zeros((slots, like.shape[1], capacity, like.shape[3]), dtype=like.dtype, device=like.device)

    def grow(self, slots: int, capacity: int) -> None:
        """Reallocate the buffers to at least ``slots`` x ``capacity``, keeping what they hold."""
        if not self.is_initialized:
            return
        old_slots, _, old_capacity, _ = self.keys.shape
        if slots <= old_slots and capacity <= old_capacity:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = self._empty(old, max(slots, old_slots), max(capacity, old_capacity))
            new[:old_slots, :, :old_capacity] = old
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write this step's keys/values (batch, kv_heads, q, head_dim); return the ones to attend over."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        step = self.owner.step
        if step.kind == "mixed":
            raise RuntimeError("a mixed step runs only through oikyo's own forward (oikyo.serve.engine.decoder)")
        if step.kind == "prefill":
            q = key_states.shape[2]
            self.keys[step.slots, :, :q] = key_states
            self.values[step.slots, :, :q] = value_states
            # The slots were empty: the new keys are all there is to attend to.
            return key_states, value_states
        n = key_states.shape[0]
        # Row b writes its one new key (kv_heads, head_dim) at column positions[b] of slot b.
        self.keys[step.rows, :, step.positions] = key_states[:, :, 0]
        self.values[step.rows, :, step.positions] = value_states[:, :, 0]
        # (n, kv_heads, T, head_dim) views of the buffers.
        return self.keys[:n, :, : step.kv_length], self.values[:n, :, : step.kv_length]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.step.kv_length, 0

    def get_seq_length(self) -> int:
        return self.owner.step.kv_length - 1 if self.owner.step.kind == "decode" else 0

    def get_max_length(self) -> int:
        return self.owner.capacity

    def move(self, src: int, dst: int, length: int) -> None:
        if self.is_initialized and length > 0:
            self.keys[dst, :, :length] = self.keys[src, :, :length]
            self.values[dst, :, :length] = self.values[src, :, :length]


class _Step:
    """What the next forward writes: filled by :meth:`SlotKVCache.prefill`, :meth:`SlotKVCache.decode`
    or :meth:`SlotKVCache.mixed`."""

    kind: str = "none"
    slots: torch.Tensor  # prefill, mixed: (rows,) slot of each prompt
    rows: torch.Tensor  # decode, mixed: (n,) = arange(n)
    positions: torch.Tensor  # decode, mixed: (n,) column each decoding row writes
    kv_length: int = 0  # columns attended over (mixed: by the decoding rows)


class SlotKVCache(Cache):
    """Per-slot KV cache for continuous batching (see the module docstring for the layout).

    ``slots`` and ``capacity`` are the sizes to allocate; :meth:`reserve` grows them later.
    ``attn_implementation`` picks the mask format ("sdpa": boolean, "eager": additive float).
    """

    def __init__(self, num_layers: int, slots: int, capacity: int, attn_implementation: str = "sdpa"):
        self.slots = slots
        self.capacity = _round_up(capacity)
        self.additive_mask = attn_implementation == "eager"
        self.step = _Step()
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])

    def reserve(self, slots: int, capacity: int) -> None:
        """Make room for ``slots`` sequences of up to ``capacity`` tokens each (no-op when there is room)."""
        if slots <= self.slots and capacity <= self.capacity:
            return
        self.slots = max(slots, self.slots)
        self.capacity = max(_round_up(capacity), self.capacity)
        for layer in self.layers:
            layer.grow(self.slots, self.capacity)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` cached positions of slot ``src`` into slot ``dst`` (every layer)."""
        for layer in self.layers:
            layer.move(src, dst, length)

    def prefill(self, slots: torch.Tensor, lengths: torch.Tensor, q: int, dtype: torch.dtype) -> torch.Tensor:
        """Announce a prefill of ``len(slots)`` right-padded prompts of ``q`` columns; return its mask.

        slots, lengths: (rows,) long. Returns the mask (rows, 1, q, q): query i sees key j when
        j <= i and j < lengths[row] (padding keys hidden; padding queries still see real keys, so
        no softmax row is empty).
        """
        step = _Step()
        step.kind, step.slots, step.kv_length = "prefill", slots, q
        self.step = step
        cols = torch.arange(q, device=slots.device)
        causal = cols[None, :] <= cols[:, None]  # (q, q)
        real = cols[None, :] < lengths[:, None]  # (rows, q)
        return self._format(causal[None, None] & real[:, None, None, :], dtype)

    def decode(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Announce a decode step of slots ``0..n-1`` writing at ``positions`` (n,); return its mask.

        Returns the mask (n, 1, 1, T), T = max(positions) + 1: row b sees columns <= positions[b].
        """
        step = _Step()
        n = positions.shape[0]
        step.kind, step.rows, step.positions = "decode", torch.arange(n, device=positions.device), positions
        step.kv_length = int(positions.max()) + 1
        self.step = step
        cols = torch.arange(step.kv_length, device=positions.device)
        return self._format((cols[None, :] <= positions[:, None])[:, None, None, :], dtype)

    def mixed(self, positions: torch.Tensor, slots: torch.Tensor) -> None:
        """Announce a mixed step for oikyo's own forward: slots ``0..n-1`` decode, writing at ``positions``
        (n,), and prompts are written into ``slots`` (rows,), which must come after them. No mask: the
        own forward's kernels take each row's length."""
        step = _Step()
        step.kind, step.positions, step.slots = "mixed", positions, slots
        step.rows = torch.arange(positions.shape[0], device=positions.device)
        step.kv_length = int(positions.max()) + 1
        self.step = step

    def _format(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not self.additive_mask:
            return mask
        # Eager attention adds the mask to the scores: 0 where visible, the lowest float elsewhere.
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _round_up(n: int) -> int:
    return max(CAPACITY_STEP, -(-n // CAPACITY_STEP) * CAPACITY_STEP)
