"""Odds-ratio preference optimisation recipe (ORPO, Hong et al. 2024): reference-free, one stage.

    recipe = ORPORecipe(config, ctx)   # ctx: oikyo.train.runner.RunContext
    recipe.setup(); result = recipe.train(); recipe.cleanup()

**Data.** Preference rows (prompt messages + chosen + rejected), encoded exactly as for DPO
(:func:`oikyo.train.data.encode_dpo_rows`): prompt + chosen and prompt + rejected, labels on the
reply only. Any other row stops the run with a :class:`~oikyo.train.TrainingError`.

**Loss**, per pair, with ``lc`` / ``lr`` the *mean* per-token log-probabilities of the chosen /
rejected reply (length-normalised, as in the paper and TRL)::

    log_odds(l)  = l - log(1 - exp(l))                  # log(p / (1 - p)) with p = exp(l)
    ratio        = log_odds(lc) - log_odds(lr)          # the log odds ratio
    loss         = nll + beta * -log sigmoid(ratio)     # beta: lambda in the paper

where ``nll = -lc`` is the SFT loss on the chosen reply (its mean token cross-entropy). The loss of a
step is the mean over its pairs; TRL averages the NLL over all chosen tokens of the batch instead,
which weighs long replies more. No reference model: one forward pass over both sequences.

**Metrics** (per optimizer step; ``eval_`` + the same at evaluation): ``loss``, ``nll``, ``or_loss``
(the odds-ratio term before its weight), ``log_odds_margin`` (mean ``ratio``: grows as chosen
replies become likelier than rejected ones), ``accuracy`` (share of pairs with ``ratio > 0``) and
``logps_chosen`` / ``logps_rejected`` (mean ``lc`` / ``lr``).
"""

from __future__ import annotations

import itertools

from oikyo.train import data
from oikyo.train.config import TrainConfig
from oikyo.train.dpo import sequence_logps
from oikyo.train.runner import RunContext, Session, TrainResult

# Mean log-probabilities are kept below this so that log(1 - exp(l)) stays finite when the model
# gives a reply probability ~1 (float32 exp(-1e-9) rounds to 1).
MAX_MEAN_LOGP = -1e-6


def mean_logps(model, batch: dict):
    """Mean log-probability per labelled token of each sequence: (rows,)."""
    counts = (batch["labels"][:, 1:] != data.IGNORE_INDEX).sum(dim=1).clamp(min=1)  # (rows,)
    return sequence_logps(model, batch) / counts


def log1m_exp(x):
    """log(1 - exp(x)) for x < 0, accurate near 0 and far below it."""
    import math

    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(chosen, rejected, beta: float):
    """Per-pair ORPO losses from mean reply log-probabilities (pairs,) (see the module docstring).

    Returns (loss, nll, or_loss, log odds ratio), each (pairs,).
    """
    import torch.nn.functional as F

    chosen, rejected = chosen.clamp(max=MAX_MEAN_LOGP), rejected.clamp(max=MAX_MEAN_LOGP)
    ratio = (chosen - log1m_exp(chosen)) - (rejected - log1m_exp(rejected))  # (pairs,)
    or_loss = -F.logsigmoid(ratio)
    nll = -chosen
    return nll + beta * or_loss, nll, or_loss, ratio


class ORPORecipe:
    """setup() → train() → cleanup() for method orpo."""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.session: Session | None = None
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
        session.build(self)

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

    def _pair_losses(self, batch: dict):
        """(loss, nll, or_loss, ratio, chosen, rejected) per pair of a collated pair batch."""
        pairs = self.count(batch)
        logps = mean_logps(self.session.model, batch)  # (2 * pairs,): chosen, then rejected
        chosen, rejected = logps[:pairs], logps[pairs:]
        return (*orpo_loss(chosen, rejected, self.config.orpo.beta), chosen, rejected)

    @staticmethod
    def _sums(nll, or_loss, ratio, chosen, rejected) -> dict:
        return {
            "nll": nll.sum().item(),
            "or_loss": or_loss.sum().item(),
            "log_odds_margin": ratio.sum().item(),
            "accuracy": (ratio > 0).sum().item(),
            "logps_chosen": chosen.sum().item(),
            "logps_rejected": rejected.sum().item(),
        }

    def loss(self, batch: dict):
        """(summed pair loss, sums of the metrics over the pairs)."""
        loss, *parts = self._pair_losses(batch)
        return loss.sum(), self._sums(*(p.detach() for p in parts))

    def evaluate(self) -> dict | None:
        """Mean ORPO loss and metrics over the validation pairs."""
        if not self.eval_pairs:
            return None
        loss, totals = 0.0, {}
        device = self.session.device
        for items in data.eval_plan([len(p) for p in self.eval_pairs], self.config.train.batch_size):
            batch = data.collate_pairs([self.eval_pairs[i] for i in items], self.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            losses, *parts = self._pair_losses(batch)
            loss += losses.sum().item()
            for key, value in self._sums(*parts).items():
                totals[key] = totals.get(key, 0.0) + value
        n = len(self.eval_pairs)
        return {"eval_loss": loss / n, **{f"eval_{key}": value / n for key, value in totals.items()}}

    # -- run ----------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        return self.session.fit(self)

    def cleanup(self) -> None:
        if self.session is not None:
            self.session.close()
