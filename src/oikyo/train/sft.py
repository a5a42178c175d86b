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

Replay (``data.mix`` > 0): general conversations (:func:`oikyo.data.replay.load_replay`: the shipped
set or ``data.mix_dataset``; for ``parent``, the rows the job system resolved, ``ctx.replay``) are
encoded with the same template and ``train_on`` rules, appended after the task examples, and added
to the task batches at share ``mix`` of the examples (:func:`oikyo.train.data.mix_plan`, or
:func:`~oikyo.train.data.mixed_order` when packing); their tokens count in the loss like the task's.
Each step reports ``replay_share`` (replay's share of the trained tokens), ``replay_loss`` and
``task_loss``; ``eval_loss`` stays on the task's validation rows only. The replay set's identity
(hash, or dataset version) is written to ``replay.json`` in the run folder and goes into the model
version's lineage; a resume with a different replay set is refused.
"""

from __future__ import annotations

import functools
import itertools
import json

from oikyo.train import TrainingError, data
from oikyo.train.config import TrainConfig
from oikyo.train.runner import RunContext, Session, TrainResult, target_logprobs


def token_losses(model, batch: dict):
    """Cross-entropy of each target token (N,), times its loss weight when the batch has some."""
    logp, _ = target_logprobs(model, batch)  # (N,)
    if "loss_weights" not in batch:
        return -logp
    # target_logprobs returns the targets in the order of this mask (row-major), so the weights line up.
    targets = batch["labels"][:, 1:] != data.IGNORE_INDEX  # (batch, seq-1)
    weights = batch["loss_weights"][:, 1:][targets]  # (N,)
    return -(logp * weights)


def token_loss(model, batch: dict):
    """Summed cross-entropy of the target tokens, each times its loss weight when the batch has some.

    Without ``loss_weights`` this is exactly ``-target_logprobs(...).sum()`` (the fast path).
    """
    return token_losses(model, batch).sum()


def replay_sums(losses, batch: dict) -> dict:
    """Summed statistics of the replay tokens of a batch with a ``replay_mask`` (for step_metrics)."""
    targets = batch["labels"][:, 1:] != data.IGNORE_INDEX  # (batch, seq-1)
    replay = batch["replay_mask"][:, 1:][targets]  # (N,): aligned with losses, as the weights are
    return {"targets": float(losses.numel()), "replay_targets": float(replay.sum()),
            "loss_sum": float(losses.detach().sum()), "replay_loss_sum": float(losses.detach()[replay].sum())}


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
        self.n_task = len(self.examples)
        self.replay_lineage: dict | None = None
        if config.data.mix > 0:
            self.examples += self._replay_examples(encode)
        self.lengths = [len(e) for e in self.examples]
        # Target tokens per example (labels that count after the causal shift).
        self.targets = [sum(label != data.IGNORE_INDEX for label in e.labels[1:]) for e in self.examples]
        self.eval_examples = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            self.eval_examples = encode(rows, split="validation") if rows else []
        session.log(
            f"{self.n_task} training examples ({sum(self.lengths[:self.n_task])} tokens), "
            f"{len(self.eval_examples)} validation examples"
        )
        session.build(self)
        if config.data.packing:
            data.check_packing_support(session.model)

    def _replay_examples(self, encode) -> list:
        """The replay set, encoded (over-long rows left out); its identity pinned in run_dir/replay.json."""
        from oikyo.data.replay import load_replay

        # data.mix_dataset=parent names the parent model version's training data: the job system, which
        # owns the model versions, resolves it from the lineage and hands the rows over as ctx.replay.
        replay = self.ctx.replay or load_replay(self.config.data.mix_dataset)
        record = self.ctx.run_dir / "replay.json"
        if record.is_file():  # a resume: the batches after the checkpoint must draw from the same set
            pinned = json.loads(record.read_text())
            if pinned != replay.lineage:
                raise TrainingError(
                    f"this run started with the replay set {pinned} but now finds {replay.lineage}; "
                    "exact resume needs the same replay data (start a new run to use the new set)"
                )
        elif self.session.rank == 0:  # one writer, renamed into place: another rank never reads half a file
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f".{record.name}.tmp")
            tmp.write_text(json.dumps(replay.lineage, indent=2, sort_keys=True))
            tmp.replace(record)
        self.replay_lineage = replay.lineage
        examples = encode(replay.rows, split="replay", drop_too_long=True)
        per_epoch = data.replay_total(self.n_task, self.config.data.mix)
        self.session.log(f"replay: {len(examples)} examples from {replay.lineage}; {per_epoch} mixed into "
                         f"each epoch's {self.n_task} task rows")
        return examples

    # -- what the session's loop asks for ---------------------------------------------------

    def plan(self, epoch: int) -> list:
        """Batches of this epoch: lists of example indices, or lists of packed blocks (cached per epoch)."""
        if epoch not in self._plans:
            train, cfg = self.config.train, self.config.data
            n_task, n_replay = self.n_task, len(self.examples) - self.n_task
            if cfg.packing:
                order = data.mixed_order(n_task, n_replay, cfg.mix, train.seed, epoch) if n_replay else None
                plan = data.pack_plan(self.lengths, cfg.max_length, train.batch_size, train.seed, epoch, order)
            else:
                lengths = self.lengths[:n_task]
                plan = data.epoch_plan(lengths, train.batch_size, train.seed, epoch, train.group_by_length)
                if n_replay:
                    plan = data.mix_plan(plan, n_task, n_replay, cfg.mix, train.seed, epoch)
            self._plans = {epoch: plan}  # only the current epoch is kept
        return self._plans[epoch]

    def make_batch(self, items: list) -> dict:
        blocks = items if self.config.data.packing else [[i] for i in items]
        if self.config.data.packing:
            batch = data.collate_packed([[self.examples[i] for i in block] for block in items], self.pad_id)
        else:
            batch = data.collate([self.examples[i] for i in items], self.pad_id)
        if self.replay_lineage is not None:  # which tokens are replay's, for the replay metrics
            batch["replay_mask"] = data.replay_mask(blocks, self.lengths, self.n_task, batch["labels"].shape[1])
        return batch

    def count(self, batch: dict) -> int:
        return data.count_targets(batch["labels"])

    def units(self, items: list) -> int:
        if self.config.data.packing:
            return sum(self.targets[i] for block in items for i in block)
        return sum(self.targets[i] for i in items)

    def tokens(self, batch: dict) -> int:
        return int(batch.get("attention_mask", batch.get("token_mask")).sum())

    def loss(self, batch: dict):
        """(summed token cross-entropy, weighted where the batch has loss weights; replay sums when mixing)."""
        losses = token_losses(self.session.model, batch)  # (N,)
        return losses.sum(), (replay_sums(losses, batch) if "replay_mask" in batch else {})

    def step_metrics(self, sums: dict) -> dict:
        """replay_share (of the step's trained tokens), replay_loss and task_loss (means over their tokens)."""
        if not sums:
            return {}
        replay, total = sums["replay_targets"], max(sums["targets"], 1.0)
        metrics = {"replay_share": replay / total}
        if replay:
            metrics["replay_loss"] = sums["replay_loss_sum"] / replay
        if total > replay:
            metrics["task_loss"] = (sums["loss_sum"] - sums["replay_loss_sum"]) / (total - replay)
        return metrics

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
        result = self.session.fit(self)
        result.replay = self.replay_lineage  # recorded in the model version's lineage
        return result

    def cleanup(self) -> None:
        if self.session is not None:
            self.session.close()
