"""Direct preference optimisation recipe (sigmoid loss, Rafailov et al. 2023).

    recipe = DPORecipe(config, ctx)
    recipe.setup(); result = recipe.train(); recipe.cleanup()

Each preference row becomes two sequences, prompt + chosen and prompt + rejected, whose reply
tokens carry labels. For a pair the loss is ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))``, where
``pc``/``pr`` are the summed log-probabilities of the chosen/rejected reply under the policy and
``rc``/``rr`` under the reference model. The reference is the same network with its LoRA adapter
switched off (peft's ``disable_adapter()``), so LoRA costs no second copy; full fine-tuning keeps
a frozen copy of the starting weights. Metrics: ``reward_margin`` (mean of beta * the log-ratio
difference) and ``reward_accuracy`` (share of pairs where chosen beats rejected).
"""

from __future__ import annotations

import itertools

from oikyo.train import data
from oikyo.train.config import TrainConfig
from oikyo.train.runner import (
    RunContext,
    Session,
    TrainResult,
    build_model,
    frozen_reference,
    lora_kwargs,
    reference_forward,
    target_logprobs,
)


def sequence_logps(model, batch: dict):
    """Summed log-probability of each sequence's labelled tokens: (rows,)."""
    import torch

    logp, rows = target_logprobs(model, batch)  # (N,), (N,)
    sums = torch.zeros(batch["input_ids"].shape[0], dtype=logp.dtype, device=logp.device)
    return sums.index_add(0, rows, logp)  # (rows,)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per-pair sigmoid DPO loss and the implicit reward margin: both (pairs,)."""
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # (pairs,)
    return -F.logsigmoid(margin), margin


class DPORecipe:
    """setup() → train() → cleanup() for method dpo."""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.session: Session | None = None
        self.reference = None  # frozen copy for full fine-tuning; None for LoRA (adapter disabled instead)
        self._plans: dict[int, list] = {}

    def setup(self) -> None:
        config = self.config
        self.session = session = Session(config, self.ctx)
        self.pad_id = session.tokenizer.pad_token_id
        limit = data.TokenLimit(config.data.max_length, session.context_length)
        self.pairs = data.encode_dpo_rows(self.ctx.train_rows(), session.tokenizer, limit=limit, log=session.log)
        self.lengths = [len(p) for p in self.pairs]
        self.eval_pairs = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            if rows:
                self.eval_pairs = data.encode_dpo_rows(rows, session.tokenizer, limit=limit, split="validation")
        session.log(f"{len(self.pairs)} training pairs, {len(self.eval_pairs)} validation pairs")
        model = build_model(
            self.ctx.model_dir,
            config.method.finetune,
            session.dtype,
            session.runtime.device,
            lora_kwargs(config),
            config.train.gradient_checkpointing,
        )
        self.reference = frozen_reference(model, config.method.finetune)  # before a resume loads weights
        session.build(self, model=model)

    # -- what the session's loop asks for ---------------------------------------------------

    def plan(self, epoch: int) -> list:
        if epoch not in self._plans:
            train = self.config.train
            plan = data.epoch_plan(self.lengths, train.batch_size, train.seed, epoch, train.group_by_length)
            self._plans = {epoch: plan}
        return self._plans[epoch]

    def make_batch(self, items: list) -> dict:
        return data.collate_pairs([self.pairs[i] for i in items], self.pad_id)  # (2 * pairs, seq)

    def count(self, batch: dict) -> int:
        return batch["input_ids"].shape[0] // 2  # pairs

    def units(self, items: list) -> int:
        return len(items)  # pairs

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    def _reference_logps(self, batch: dict):
        return reference_forward(sequence_logps, self.session.model, self.reference, batch)

    def _pair_losses(self, batch: dict):
        """Per-pair losses and reward margins for a collated pair batch: (pairs,), (pairs,)."""
        pairs = batch["input_ids"].shape[0] // 2
        reference = self._reference_logps(batch)  # (2 * pairs,)
        policy = sequence_logps(self.session.model, batch)  # (2 * pairs,)
        return dpo_loss(policy[:pairs], policy[pairs:], reference[:pairs], reference[pairs:], self.config.dpo.beta)

    def loss(self, batch: dict):
        """(summed pair loss, sums of the reward margin and accuracy over the pairs)."""
        losses, margin = self._pair_losses(batch)
        margin = margin.detach()
        return losses.sum(), {"reward_margin": margin.sum().item(), "reward_accuracy": (margin > 0).sum().item()}

    def evaluate(self) -> dict | None:
        """Mean DPO loss, reward margin and accuracy over the validation pairs."""
        if not self.eval_pairs:
            return None
        loss = margin = accuracy = 0.0
        device = self.session.device
        for items in data.eval_plan([len(p) for p in self.eval_pairs], self.config.train.batch_size):
            batch = data.collate_pairs([self.eval_pairs[i] for i in items], self.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            losses, margins = self._pair_losses(batch)
            loss += losses.sum().item()
            margin += margins.sum().item()
            accuracy += (margins > 0).sum().item()
        n = len(self.eval_pairs)
        return {"eval_loss": loss / n, "eval_reward_margin": margin / n, "eval_reward_accuracy": accuracy / n}

    def train(self) -> TrainResult:
        return self.session.fit(self)

    def cleanup(self) -> None:
        self.reference = None
        if self.session is not None:
            self.session.close()

