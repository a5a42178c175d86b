"""Supervised fine-tuning recipe: mean token cross-entropy on the trained tokens.

    recipe = SFTRecipe(config, ctx)   # ctx: oikyo.train.runner.RunContext
    recipe.setup()                    # tokenize rows, build model/optimizer, resume if a checkpoint exists
    result = recipe.train()           # the optimizer-step loop (oikyo.train.runner.Session.fit)
    recipe.cleanup()

Rows are conversations (loss on assistant replies by default, ``data.train_on``; reasoning traces
too unless ``train.loss_on_reasoning`` is false) or plain text (loss on every token). Batches are
length-grouped and padded to their longest example, or packed into ``max_length`` blocks
(``data.packing``); see :mod:`oikyo.train.data`. The loss of an optimizer step is the mean over
every target token of its micro-batches, so gradient accumulation gives the same gradient as one
large batch.

Per-message loss weights (see :mod:`oikyo.models.chat_template`): a reply weighted 0 has no target
tokens; a reply weighted w contributes w times each of its tokens' cross-entropy to the summed loss,
while the normaliser stays the count of target tokens (the Session's ``units``), so a weight of 2
counts a token exactly twice. Batches without weights take the unweighted path unchanged. The
validation loss is the plain mean over the target tokens (weights are a training choice; an
unweighted eval loss stays comparable between runs that weigh differently).
"""

from __future__ import annotations

import functools
import itertools

from oikyo.train import data
from oikyo.train.config import TrainConfig
from oikyo.train.runner import RunContext, Session, TrainResult, target_logprobs


def token_loss(model, batch: dict):
    """Summed cross-entropy of the target tokens, each times its loss weight when the batch has some.

    Without ``loss_weights`` this is exactly ``-target_logprobs(...).sum()`` (the fast path).
    """
    logp, _ = target_logprobs(model, batch)  # (N,)
    if "loss_weights" not in batch:
        return -logp.sum()
    # target_logprobs returns the targets in the order of this mask (row-major), so the weights line up.
    targets = batch["labels"][:, 1:] != data.IGNORE_INDEX  # (batch, seq-1)
    weights = batch["loss_weights"][:, 1:][targets]  # (N,)
    return -(logp * weights).sum()


class SFTRecipe:
    """setup() → train() → cleanup() for method sft."""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.session: Session | None = None
        self._plans: dict[int, list] = {}

    # -- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        config = self.config
        self.session = session = Session(config, self.ctx)
        self.pad_id = session.tokenizer.pad_token_id
        limit = data.TokenLimit(config.data.max_length, session.context_length)
        encode = functools.partial(
            data.encode_sft_rows,
            tokenizer=session.tokenizer,
            limit=limit,
            train_on=config.data.train_on,
            loss_on_reasoning=config.train.loss_on_reasoning,
            log=session.log,
        )
        self.examples = encode(self.ctx.train_rows(), split="train")
        self.lengths = [len(e) for e in self.examples]
        # Target tokens per example (labels that count after the causal shift).
        self.targets = [sum(label != data.IGNORE_INDEX for label in e.labels[1:]) for e in self.examples]
        self.eval_examples = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            self.eval_examples = encode(rows, split="validation") if rows else []
        session.log(
            f"{len(self.examples)} training examples ({sum(self.lengths)} tokens), "
            f"{len(self.eval_examples)} validation examples"
        )
        session.build(self)
        if config.data.packing:
            data.check_packing_support(session.model)

    # -- what the session's loop asks for ---------------------------------------------------

    def plan(self, epoch: int) -> list:
        """Batches of this epoch: lists of example indices, or lists of packed blocks (cached per epoch)."""
        if epoch not in self._plans:
            train = self.config.train
            if self.config.data.packing:
                plan = data.pack_plan(self.lengths, self.config.data.max_length, train.batch_size, train.seed, epoch)
            else:
                plan = data.epoch_plan(self.lengths, train.batch_size, train.seed, epoch, train.group_by_length)
            self._plans = {epoch: plan}  # only the current epoch is kept
        return self._plans[epoch]

    def make_batch(self, items: list) -> dict:
        if self.config.data.packing:
            return data.collate_packed([[self.examples[i] for i in block] for block in items], self.pad_id)
        return data.collate([self.examples[i] for i in items], self.pad_id)

    def count(self, batch: dict) -> int:
        return data.count_targets(batch["labels"])

    def units(self, items: list) -> int:
        if self.config.data.packing:
            return sum(self.targets[i] for block in items for i in block)
        return sum(self.targets[i] for i in items)

    def tokens(self, batch: dict) -> int:
        return int(batch.get("attention_mask", batch.get("token_mask")).sum())

    def loss(self, batch: dict):
        """(summed token cross-entropy, weighted where the batch has loss weights; no extra metrics)."""
        return token_loss(self.session.model, batch), {}

    def evaluate(self) -> dict | None:
        """Mean token loss over the validation examples (no padding waste: longest-first batches)."""
        if not self.eval_examples:
            return None
        total, count = 0.0, 0
        device = self.session.device
        for items in data.eval_plan([len(e) for e in self.eval_examples], self.config.train.batch_size):
            batch = data.collate([self.eval_examples[i] for i in items], self.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logp, _ = target_logprobs(self.session.model, batch)
            total -= logp.sum().item()
            count += logp.numel()
        return {"eval_loss": total / max(count, 1)}

    # -- run ----------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        return self.session.fit(self)

    def cleanup(self) -> None:
        if self.session is not None:
            self.session.close()
