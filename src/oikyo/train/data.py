"""Rows to token batches: encoding, length limits, the seeded data order, collation and packing.

Canonical rows (src/oikyo/data/schema.py) become token ids through ``oikyo.models.chat_template``
only, so training sees exactly the format evaluation and serving use::

    examples = encode_sft_rows(rows, tokenizer, limit=TokenLimit(1024, 8192), train_on="assistant")
    plan = epoch_plan([len(e) for e in examples], batch_size=8, seed=0, epoch=0)
    batch = collate([examples[i] for i in plan[0]], pad_id=tokenizer.pad_token_id)

**Loss weights.** Messages may carry a loss ``weight`` (see :mod:`oikyo.models.chat_template`):
weight 0 masks the reply's labels, and other weights travel as ``Encoded.weights``. A batch holds
``loss_weights`` (batch, seq; float32, aligned with ``labels``) only when one of its examples has
weights, so unweighted data collates and trains exactly as before.

**Order.** Epoch ``e`` visits the rows in a permutation seeded by ``(seed, e)``; nothing else draws
from that generator, so the position in the data is just ``(epoch, batch index)`` and resuming
mid-epoch rebuilds the same plan and continues with exactly the next batch. With
``group_by_length`` the permutation is cut into windows of 50 batches, each window is sorted by
length and cut into batches, and the batches are shuffled (same generator): batches hold examples
of similar length, so padding to the longest wastes little, while the order stays random.

**Packing.** Examples (in the seeded order) are concatenated greedily into blocks of at most
``max_length`` tokens. Each block carries ``position_ids`` that restart at 0 for every example and
no ``attention_mask``; transformers (>= 4.53, masking_utils.find_packed_sequence_indices) turns
such restarts into a block-diagonal causal mask for the sdpa and eager attention kernels, and
flash-attention kernels use them as sequence boundaries. So attention never crosses examples.
The label of each example's first token is masked (it would otherwise be "predicted" from the
previous example's last token). On CPU the block mask costs little at these lengths (attention is a
small share of the FLOPs of a 135M model at 1k tokens); :func:`check_packing_support` refuses
models whose forward takes no ``position_ids``.

**Replay mixing** (``data.mix``, see :mod:`oikyo.data.replay`). Replay examples are appended
after the task examples (index >= the task count), so a plan still holds plain indices. The task
plan is unchanged (same batches, same steps per epoch, every task row once); replay examples come
on top, a share ``mix`` of all examples: after ``c`` task rows, ``round(c x mix / (1 - mix))``
replay rows in all (:func:`mix_plan`; mix 0.2 at batch size 8: 2 replay rows per batch). Packed,
the epoch's example stream is the task order with as many replay examples shuffled in, then packed
as usual (:func:`mixed_order`). Which replay examples come next is a pure function of
``(seed, epoch)`` (its own generator, :func:`replay_stream`), so exact resume stays exact.

**Limits.** An example longer than ``data.max_length`` or the model's context raises
:class:`~oikyo.train.TrainingError` naming the rows; nothing is ever silently truncated.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from oikyo.models.chat_template import IGNORE_INDEX, Encoded, encode_conversation, encode_text, row_kind
from oikyo.train import TrainingError

GROUP_WINDOW = 50  # batches per length-sorted window (as in transformers' LengthGroupedSampler)
_MAX_LISTED = 5  # over-long rows named in one error message
# Attention implementations that turn restarting position_ids into per-example attention.
PACKING_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class TokenLimit:
    """The longest example allowed: the config's max_length and the model's context length."""

    max_length: int
    context_length: int

    @property
    def tokens(self) -> int:
        return min(self.max_length, self.context_length)

    def describe(self) -> str:
        if self.context_length < self.max_length:
            return f"the model's context length ({self.context_length} tokens)"
        return f"data.max_length ({self.max_length} tokens)"


@dataclass
class Pair:
    """One DPO example: prompt + chosen reply and prompt + rejected reply (labels on the reply only)."""

    chosen: Encoded
    rejected: Encoded

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def _preview(row: dict) -> str:
    if row.get("messages"):
        first = next((m for m in row["messages"] if m.get("role") == "user"), row["messages"][0])
        text = first.get("content") or ""
    else:
        text = row.get("text") or ""
    text = " ".join(text.split())
    return text[:60] + ("..." if len(text) > 60 else "")


def _too_long_error(split: str, too_long: list[tuple[int, int, str]], limit: TokenLimit) -> TrainingError:
    listed = "; ".join(f"row {i} ({n} tokens): {preview!r}" for i, n, preview in too_long[:_MAX_LISTED])
    more = f"; and {len(too_long) - _MAX_LISTED} more" if len(too_long) > _MAX_LISTED else ""
    hint = (
        "raise data.max_length"
        if limit.max_length < limit.context_length
        else "shorten or drop these rows (the model cannot read longer sequences)"
    )
    return TrainingError(
        f"{len(too_long)} {split} example(s) are longer than {limit.describe()} and would have to be truncated "
        f"(oikyo never truncates silently): {listed}{more}. Fix: {hint}."
    )


def _finish(split: str, examples: list, skipped: int, too_long: list, limit: TokenLimit, log) -> list:
    if too_long:
        raise _too_long_error(split, too_long, limit)
    if skipped and log:
        log(f"{split}: skipped {skipped} row(s) with no tokens to train on (no assistant reply, or all weighted 0)")
    if not examples:
        raise TrainingError(f"the {split} data is empty: no rows with tokens to train on")
    return examples


def encode_sft_rows(
    rows: Iterable[dict],
    tokenizer,
    *,
    limit: TokenLimit,
    train_on: str = "assistant",
    loss_on_reasoning: bool = True,
    split: str = "train",
    log=None,
    drop_too_long: bool = False,
) -> list[Encoded]:
    """Encode conversation or text rows for SFT; raise TrainingError for over-long rows or no data.

    ``train_on`` and ``loss_on_reasoning`` choose the trained tokens, with the messages' own loss
    weights (see :func:`oikyo.models.chat_template.encode_conversation`). ``drop_too_long`` skips
    over-long rows with a log line instead (replay data: not the user's rows, so nothing to fix).
    """
    examples, too_long, skipped = [], [], 0
    for index, row in enumerate(rows):
        kind = row_kind(row)
        if kind == "preference":
            raise TrainingError(f"{split} row {index} is a preference pair; use method.name=dpo for preference data")
        if kind == "unpaired_preference":
            raise TrainingError(
                f"{split} row {index} is an answer judged desirable or not (unpaired preference data); "
                "use method.name=kto for such data (SFT would learn the undesirable answers too)"
            )
        if kind == "text":  # plain text has no assistant turns: every token is trained on
            encoded = encode_text(tokenizer, row["text"])
        else:
            encoded = encode_conversation(
                tokenizer,
                list(row["messages"]),
                tools=row.get("tools"),
                train_on=train_on,
                loss_on_reasoning=loss_on_reasoning,
            )
        if len(encoded) > limit.tokens:
            too_long.append((index, len(encoded), _preview(row)))
        elif any(label != IGNORE_INDEX for label in encoded.labels[1:]):
            examples.append(encoded)
        else:
            skipped += 1
    if drop_too_long and too_long:
        if log:
            log(f"{split}: left out {len(too_long)} row(s) longer than {limit.describe()}")
        too_long = []
    return _finish(split, examples, skipped, too_long, limit, log)


def encode_dpo_rows(
    rows: Iterable[dict], tokenizer, *, limit: TokenLimit, split: str = "train", log=None
) -> list[Pair]:
    """Encode preference rows as (prompt + chosen, prompt + rejected), labels on the final reply only."""
    pairs, too_long = [], []
    for index, row in enumerate(rows):
        if row_kind(row) != "preference" or row.get("rejected") is None:
            raise TrainingError(f"{split} row {index} is not a preference pair (messages, chosen, rejected)")
        messages, tools = list(row["messages"]), row.get("tools")
        # Labels on the final reply only: weights on earlier turns of the prompt do not apply.
        chosen, rejected = (
            encode_conversation(
                tokenizer,
                messages + [{"role": "assistant", "content": reply}],
                tools=tools,
                train_on="last",
                use_weights=False,
            )
            for reply in (row["chosen"], row["rejected"])
        )
        pair = Pair(chosen, rejected)
        if len(pair) > limit.tokens:
            too_long.append((index, len(pair), _preview(row)))
        else:
            pairs.append(pair)
    return _finish(split, pairs, 0, too_long, limit, log)


# ----------------------------------------------------------------------------- order


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded permutation of ``n`` example indices for ``epoch`` (same inputs, same order)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_plan(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True
) -> list[list[int]]:
    """Batches of example indices for one epoch (see the module docstring for the order)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_WINDOW
    batches = []
    for start in range(0, len(order), window):
        # Longest first within the window (stable sort: ties keep the seeded order).
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def pack_plan(
    lengths: Sequence[int], max_length: int, batch_size: int, seed: int, epoch: int,
    order: Sequence[int] | None = None,
) -> list[list[list[int]]]:
    """Batches of blocks for one epoch; a block is a list of example indices whose lengths fit max_length.

    ``order`` (optional) is the epoch's example stream to pack (a replay-mixed one); by default the
    seeded permutation of every example.
    """
    blocks: list[list[int]] = []
    current: list[int] = []
    used = 0
    stream = epoch_order(len(lengths), seed, epoch).tolist() if order is None else order
    for index in stream:
        if current and used + lengths[index] > max_length:
            blocks.append(current)
            current, used = [], 0
        current.append(index)
        used += lengths[index]
    if current:
        blocks.append(current)
    return [blocks[i : i + batch_size] for i in range(0, len(blocks), batch_size)]


REPLAY_STREAM = 7919  # mixed into the replay generator's seed: its draws never touch the task order's


def replay_total(n_task: int, mix: float) -> int:
    """Replay examples in an epoch of n_task task examples: a share ``mix`` of all its examples (at least 1)."""
    return max(1, round(n_task * mix / (1 - mix))) if mix > 0 else 0


def replay_stream(n_replay: int, count: int, seed: int, epoch: int) -> list[int]:
    """The first ``count`` replay example indices (0..n_replay-1) of ``epoch``: seeded permutations of the
    replay set, one after another (each replay example once before any repeats)."""
    rng = np.random.default_rng([seed, epoch, REPLAY_STREAM])
    stream: list[int] = []
    while len(stream) < count:
        stream.extend(rng.permutation(n_replay).tolist())
    return stream[:count]


def mix_plan(plan: list[list[int]], n_task: int, n_replay: int, mix: float, seed: int, epoch: int
             ) -> list[list[int]]:
    """Each task batch of ``plan`` followed by its replay examples (indices offset by n_task): after c task
    rows, round(c x mix / (1 - mix)) replay rows in all, so every stretch of batches holds replay at share
    ``mix`` (a batch may hold none when the share is small) and the epoch as many as :func:`replay_total`."""
    q = mix / (1 - mix)
    stream = replay_stream(n_replay, replay_total(n_task, mix), seed, epoch)
    mixed, seen, placed = [], 0, 0
    for k, batch in enumerate(plan):
        seen += len(batch)
        upto = len(stream) if k == len(plan) - 1 else min(round(seen * q), len(stream))
        mixed.append(batch + [n_task + r for r in stream[placed:upto]])
        placed = max(placed, upto)
    return mixed


def mixed_order(n_task: int, n_replay: int, mix: float, seed: int, epoch: int) -> list[int]:
    """The packed epoch's example stream: the task order with :func:`replay_total` replay examples
    (indices offset by n_task) shuffled in, so replay is ``mix`` of the examples."""
    replay = [n_task + r for r in replay_stream(n_replay, replay_total(n_task, mix), seed, epoch)]
    combined = epoch_order(n_task, seed, epoch).tolist() + replay
    shuffle = np.random.default_rng([seed, epoch, REPLAY_STREAM, 1]).permutation(len(combined))
    return [combined[i] for i in shuffle.tolist()]


def replay_mask(blocks: Sequence[Sequence[int]], lengths: Sequence[int], n_task: int, width: int):
    """(len(blocks), width) bool: True on the tokens of replay examples (index >= n_task), laid out as
    :func:`collate` (one example per block) and :func:`collate_packed` lay them out."""
    import torch

    mask = torch.zeros((len(blocks), width), dtype=torch.bool)
    for row, block in enumerate(blocks):
        at = 0
        for index in block:
            if index >= n_task:
                mask[row, at:at + lengths[index]] = True
            at += lengths[index]
    return mask


def eval_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: longest first, so similar lengths share a batch (order does not matter)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------- collation


def collate(examples: Sequence[Encoded], pad_id: int) -> dict:
    """Right-pad to the longest example in the batch.

    Returns input_ids (batch, seq), labels (batch, seq) with IGNORE_INDEX on padding, attention_mask
    (batch, seq) with 1 on real tokens, and loss_weights (batch, seq) when some example has weights.
    Labels are not shifted.
    """
    import torch

    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    if any(e.weights is not None for e in examples):
        batch["loss_weights"] = _loss_weights([[e] for e in examples], width)
    return batch


def _loss_weights(rows: Sequence[Sequence[Encoded]], width: int):
    """(len(rows), width) float32: each row's examples' weights side by side (1.0 without weights, 0.0 padding)."""
    import torch

    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    for row, examples in enumerate(rows):
        at = 0
        for example in examples:
            n = len(example)
            weights[row, at : at + n] = 1.0 if example.weights is None else torch.tensor(example.weights)
            at += n
    return weights


def collate_packed(blocks: Sequence[Sequence[Encoded]], pad_id: int) -> dict:
    """Concatenate each block's examples into one row; positions restart per example.

    Returns input_ids, labels, position_ids (batch, seq) and token_mask (batch, seq: 1 on real
    tokens, used only for counting), plus loss_weights (batch, seq) when some example has weights
    (as :func:`collate`). No attention_mask: the position restarts define the
    block-diagonal mask. Padding at a row's end forms its own segment (positions from 0) with
    IGNORE_INDEX labels, so it attends to nothing real and is never trained on.
    """
    import torch

    width = max(sum(len(e) for e in block) for block in blocks)
    input_ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    labels = torch.full((len(blocks), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(blocks), width), dtype=torch.long)
    token_mask = torch.zeros((len(blocks), width), dtype=torch.long)
    for row, block in enumerate(blocks):
        at = 0
        for example in block:
            n = len(example)
            input_ids[row, at : at + n] = torch.tensor(example.input_ids, dtype=torch.long)
            labels[row, at : at + n] = torch.tensor(example.labels, dtype=torch.long)
            labels[row, at] = IGNORE_INDEX  # never predict an example's first token from the previous one
            position_ids[row, at : at + n] = torch.arange(n)
            at += n
        token_mask[row, :at] = 1
        position_ids[row, at:] = torch.arange(width - at)
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "token_mask": token_mask}
    if any(e.weights is not None for block in blocks for e in block):
        batch["loss_weights"] = _loss_weights(blocks, width)
    return batch


def collate_pairs(pairs: Sequence[Pair], pad_id: int) -> dict:
    """DPO batch: the chosen sequences then the rejected ones, padded together: (2 * batch, seq)."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


def count_targets(labels) -> int:
    """Tokens that count in the loss: labels != IGNORE_INDEX after the causal shift."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def check_packing_support(model) -> None:
    """Raise TrainingError when the model cannot take per-example ``position_ids`` (packing needs them)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    forward = getattr(base, "forward", None)
    attention = getattr(base.config, "_attn_implementation", None)
    if forward is None or "position_ids" not in inspect.signature(forward).parameters:
        reason = f"{type(base).__name__}'s forward takes no position_ids"
    elif attention not in PACKING_ATTENTION:
        reason = f"its attention implementation {attention!r} does not derive a mask from position_ids"
    else:
        return
    raise TrainingError(
        f"data.packing cannot be used with this model: {reason}. "
        "Set data.packing=false (length-grouped batches waste little padding)."
    )
