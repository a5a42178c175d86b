"""Kahneman-Tversky optimisation recipe (KTO, Ethayarajh et al. 2024) on unpaired preferences.

    recipe = KTORecipe(config, ctx)   # ctx: oikyo.train.runner.RunContext
    recipe.setup(); result = recipe.train(); recipe.cleanup()

**Data.** Rows of kind ``unpaired_preference``: ``{"messages": a whole conversation whose LAST
assistant turn is the judged answer, "desirable": bool}``. Each is encoded by the one chat template
with labels on that last reply only (``train_on="last"``). Per-message loss weights do not apply:
an answer is judged whole (a reasoning trace in it counts, unless ``train.loss_on_reasoning`` is
false). Any other row stops the run with a :class:`~oikyo.train.TrainingError`.

**Loss.** For an answer y to prompt x, let ``r = log pi(y|x) - log pi_ref(y|x)`` (summed over the
answer's tokens) and ``z0`` the reference point. Per example::

    desirable:    desirable_weight   * (1 - sigmoid(beta * (r - z0)))
    undesirable:  undesirable_weight * (1 - sigmoid(beta * (z0 - r)))

averaged over the examples. ``z0`` estimates KL(pi || pi_ref) from *mismatched* prompt/answer pairs,
as TRL does; TRL pairs each prompt with the next example's answer within the batch, while here
every example gets its partner once at setup (its prompt with the answer of the next example in a
seeded order whose sequence fits ``data.max_length``), so a batch of any size, evaluation batches
included, holds real mismatched pairs and the pairing survives a resume unchanged. ``z0`` is the
batch mean of ``log pi - log pi_ref`` over the batch's mismatched pairs, clamped at 0 and detached
(no gradient flows through it, as in the paper and TRL). With several processes (``train.nproc``)
the batch is the *global* micro-batch: each rank holds a share, and ``z0`` is the mean over all the
shares (:func:`oikyo.train.distributed.global_mean`), so a 2-process run computes what one process
would.

**Reference.** The same network with its LoRA adapter switched off (peft's ``disable_adapter()``),
as in :mod:`oikyo.train.dpo`; full fine-tuning keeps a frozen copy of the starting weights.

**Metrics** (per optimizer step; ``eval_`` + the same at evaluation): ``loss``; ``kl`` (z0);
``rewards_desirable`` / ``rewards_undesirable`` (mean ``beta * r`` over each class, absent in a step
without that class); ``logps_desirable`` / ``logps_undesirable`` (mean summed log-probability of the
answers under the policy); ``logp_margin`` and ``reward_margin`` (desirable minus undesirable: both
grow as training separates the two).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from oikyo.models.chat_template import IGNORE_INDEX, Encoded, encode_conversation
from oikyo.train import TrainingError, data
from oikyo.train.config import TrainConfig
from oikyo.train.dpo import sequence_logps
from oikyo.train.runner import (
    RunContext,
    Session,
    TrainResult,
    build_model,
    frozen_reference,
    lora_kwargs,
    reference_forward,
)

PARTNER_TRIES = 16  # examples tried, in the seeded order, for a mismatched answer that fits max_length
CLASSES = ("desirable", "undesirable")


@dataclass
class KtoExample:
    """One judged answer: the conversation and the mismatched pair used for the reference point."""

    encoded: Encoded  # the conversation, labels on its last reply
    mismatched: Encoded  # the same prompt with another example's answer (labels on that answer)
    desirable: bool

    def __len__(self) -> int:
        return max(len(self.encoded), len(self.mismatched))


# ----------------------------------------------------------------------------- data


def _kto_row(row: dict, index: int, split: str) -> tuple[list[dict], int, bool]:
    """(messages without loss weights, index of the judged answer, desirable) of one row; refuses other rows."""
    flag = row.get("desirable")
    if flag is None or not row.get("messages"):
        if row.get("chosen") is not None:
            what = "a preference pair (use method.name=dpo or orpo for such data)"
        elif row.get("text") is not None and not row.get("messages"):
            what = "plain text (use method.name=pretrain or sft for such data)"
        else:
            what = "a conversation without a desirable flag (use method.name=sft for such data)"
        raise TrainingError(
            f"{split} row {index} is {what}; method kto trains on unpaired preference rows: a conversation "
            "whose last assistant turn is judged, with desirable true or false (dataset kind unpaired_preference)"
        )
    if not isinstance(flag, (bool, np.bool_)):
        raise TrainingError(f"{split} row {index}: desirable must be true or false, not {flag!r}")
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in row["messages"]]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        raise TrainingError(f"{split} row {index} has no assistant turn: there is no answer to judge")
    return messages, last, bool(flag)


def _has_targets(encoded: Encoded) -> bool:
    return any(label != IGNORE_INDEX for label in encoded.labels[1:])


def encode_kto_rows(
    rows, tokenizer, *, limit: data.TokenLimit, seed: int = 0, loss_on_reasoning: bool = True,
    split: str = "train", log=None,
) -> list[KtoExample]:
    """Encode unpaired preference rows with their mismatched pairs (see the module docstring).

    ``loss_on_reasoning=False``: a reasoning trace in the judged answer is read but not scored.

    Raises TrainingError for a row of another kind, a row without an answer, over-long rows or no data.
    """
    def encode(messages: list[dict], tools) -> Encoded:
        return encode_conversation(
            tokenizer, messages, tools=tools, train_on="last", loss_on_reasoning=loss_on_reasoning
        )

    parsed, too_long = [], []
    for index, row in enumerate(rows):
        messages, last, desirable = _kto_row(row, index, split)
        tools = row.get("tools")
        encoded = encode(messages, tools)
        if not _has_targets(encoded):
            raise TrainingError(f"{split} row {index}: its last assistant turn has no tokens to judge")
        if len(encoded) > limit.tokens:
            too_long.append((index, len(encoded), data._preview(row)))
            continue
        parsed.append((messages[:last], messages[last], tools, encoded, desirable))
    if too_long or not parsed:
        data._finish(split, [], 0, too_long, limit, log)  # raises: the rows named, or "empty"

    examples: list[KtoExample | None] = [None] * len(parsed)
    order = np.random.default_rng([seed, len(parsed)]).permutation(len(parsed)).tolist()
    matched = 0
    for k, i in enumerate(order):
        prompt, _answer, tools, encoded, desirable = parsed[i]
        mismatched = None
        for step in range(1, min(len(parsed), PARTNER_TRIES + 1)):
            answer = parsed[order[(k + step) % len(parsed)]][1]
            candidate = encode(prompt + [answer], tools)
            if len(candidate) <= limit.tokens and _has_targets(candidate):
                mismatched = candidate
                break
        if mismatched is None:  # a lone example, or no other answer fits: its own pair (r - r_ref)
            mismatched, matched = encoded, matched + 1
        examples[i] = KtoExample(encoded, mismatched, desirable)
    if matched and log:
        log(f"{split}: {matched} example(s) found no other answer that fits data.max_length; their own answer "
            "stands in for the mismatched one in the KL reference point")
    return examples


def collate_kto(examples: list[KtoExample], pad_id: int) -> dict:
    """The examples, then their mismatched pairs, padded together: (2 * batch, seq); desirable (batch,)."""
    import torch

    batch = data.collate([e.encoded for e in examples] + [e.mismatched for e in examples], pad_id)
    batch["desirable"] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)
    return batch


def _rows(batch: dict, start: int, stop: int) -> dict:
    """Rows start:stop of a collated batch, trimmed to their longest sequence (right padding)."""
    width = int(batch["attention_mask"][start:stop].sum(dim=1).max())
    return {k: batch[k][start:stop, :width] for k in ("input_ids", "labels", "attention_mask")}


# ----------------------------------------------------------------------------- loss


def kto_loss(policy, reference, policy_kl, reference_kl, desirable, beta: float,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0, kl_mean=None):
    """Per-example KTO losses, log-ratios r and the reference point z0 (see the module docstring).

    ``policy`` / ``reference``: summed answer log-probabilities (batch,); ``policy_kl`` /
    ``reference_kl``: the same on the mismatched pairs (batch,); ``desirable``: bool (batch,);
    ``kl_mean``: how the mismatched pairs' log-ratios (batch,) become one mean (default: their own
    mean; several processes: the mean over the global micro-batch).
    Returns (losses (batch,), r (batch,), z0 (scalar, detached)).
    """
    import torch

    kl = (policy_kl - reference_kl).detach()  # (batch,)
    z0 = (kl_mean(kl) if kl_mean is not None else kl.mean()).clamp(min=0)
    logratio = policy - reference  # (batch,)
    desirable_loss = desirable_weight * (1 - torch.sigmoid(beta * (logratio - z0)))
    undesirable_loss = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratio)))
    return torch.where(desirable, desirable_loss, undesirable_loss), logratio, z0


def class_metrics(sums: dict, prefix: str = "") -> dict:
    """Means per class and the margins from summed statistics (see :meth:`KTORecipe.loss`)."""
    out = {f"{prefix}kl": sums["kl"] / max(sums["examples"], 1)}
    for cls in CLASSES:
        if sums[cls]:
            out[f"{prefix}rewards_{cls}"] = sums[f"rewards_{cls}"] / sums[cls]
            out[f"{prefix}logps_{cls}"] = sums[f"logps_{cls}"] / sums[cls]
    if sums["desirable"] and sums["undesirable"]:
        out[f"{prefix}logp_margin"] = out[f"{prefix}logps_desirable"] - out[f"{prefix}logps_undesirable"]
        out[f"{prefix}reward_margin"] = out[f"{prefix}rewards_desirable"] - out[f"{prefix}rewards_undesirable"]
    return out


# ----------------------------------------------------------------------------- recipe


class KTORecipe:
    """setup() → train() → cleanup() for method kto."""

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
        options = {"limit": limit, "seed": config.train.seed, "loss_on_reasoning": config.train.loss_on_reasoning}
        self.examples = encode_kto_rows(self.ctx.train_rows(), session.tokenizer, log=session.log, **options)
        self.lengths = [len(e) for e in self.examples]
        self.eval_examples = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            if rows:
                self.eval_examples = encode_kto_rows(
                    rows, session.tokenizer, split="validation", log=session.log, **options
                )
        self._log_balance()
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

    def _log_balance(self) -> None:
        """Say how the classes balance; the paper advises weight x count ratios between 1 and 4/3."""
        kto, log = self.config.kto, self.session.log
        good = sum(e.desirable for e in self.examples)
        bad = len(self.examples) - good
        log(f"{len(self.examples)} training examples ({good} desirable, {bad} undesirable), "
            f"{len(self.eval_examples)} validation examples")
        if good and bad:
            ratio = (kto.desirable_weight * good) / (kto.undesirable_weight * bad)
            if not 1.0 <= ratio <= 4 / 3:
                log(f"kto: desirable_weight x desirable / (undesirable_weight x undesirable) is {ratio:.2f}; the KTO "
                    "paper advises 1 to 4/3 (set kto.desirable_weight or kto.undesirable_weight)")

    # -- what the session's loop asks for ---------------------------------------------------

    def plan(self, epoch: int) -> list:
        if epoch not in self._plans:
            train = self.config.train
            plan = data.epoch_plan(self.lengths, train.batch_size, train.seed, epoch, train.group_by_length)
            self._plans = {epoch: plan}
        return self._plans[epoch]

    def make_batch(self, items: list) -> dict:
        return collate_kto([self.examples[i] for i in items], self.pad_id)  # (2 * examples, seq)

    def count(self, batch: dict) -> int:
        return batch["desirable"].shape[0]  # examples

    def units(self, items: list) -> int:
        return len(items)  # examples

    def tokens(self, batch: dict) -> int:
        return int(batch["attention_mask"][: self.count(batch)].sum())  # the judged conversations

    def _reference_logps(self, batch: dict):
        return reference_forward(sequence_logps, self.session.model, self.reference, batch)

    def _losses(self, batch: dict, kl_mean=None):
        """(losses, r, z0, policy log-probs) for a collated batch (see :func:`kto_loss`)."""
        import torch

        n = self.count(batch)
        pairs = {k: batch[k] for k in ("input_ids", "labels", "attention_mask")}
        reference = self._reference_logps(pairs)  # (2n,): examples, then mismatched pairs
        with torch.no_grad():  # z0 is detached: the mismatched pairs need no graph
            policy_kl = sequence_logps(self.session.model, _rows(batch, n, 2 * n))  # (n,)
        policy = sequence_logps(self.session.model, _rows(batch, 0, n))  # (n,)
        kto = self.config.kto
        losses, logratio, z0 = kto_loss(
            policy, reference[:n], policy_kl, reference[n:], batch["desirable"],
            kto.beta, kto.desirable_weight, kto.undesirable_weight, kl_mean,
        )
        return losses, logratio.detach(), z0, policy.detach()

    def _sums(self, batch: dict, logratio, z0, policy) -> dict:
        """Summed statistics of one batch, reduced by :func:`class_metrics`."""
        good = batch["desirable"]
        rewards = self.config.kto.beta * logratio
        n = int(good.shape[0])
        return {
            "examples": n,
            "kl": z0.item() * n,
            "desirable": int(good.sum()),
            "undesirable": int((~good).sum()),
            "rewards_desirable": rewards[good].sum().item(),
            "rewards_undesirable": rewards[~good].sum().item(),
            "logps_desirable": policy[good].sum().item(),
            "logps_undesirable": policy[~good].sum().item(),
        }

    def loss(self, batch: dict):
        """(summed example loss, summed statistics for :meth:`step_metrics`).

        Several processes: ``batch`` is this rank's share of the global micro-batch, and z0 is the
        mean over every rank's mismatched pairs (a stand-in share adds none), as one process has it.
        """
        kl_mean = None
        if self.session.dist is not None:
            from oikyo.train import distributed

            kl_mean = functools.partial(distributed.global_mean, real=distributed.STAND_IN not in batch)
        losses, logratio, z0, policy = self._losses(batch, kl_mean)
        return losses.sum(), self._sums(batch, logratio, z0, policy)

    def step_metrics(self, sums: dict) -> dict:
        """Class means and margins of one optimizer step (the session calls this with the summed extras)."""
        return class_metrics(sums)

    def evaluate(self) -> dict | None:
        """Mean KTO loss and the class metrics over the validation examples."""
        if not self.eval_examples:
            return None
        loss, totals = 0.0, {}
        device = self.session.device
        for items in data.eval_plan([len(e) for e in self.eval_examples], self.config.train.batch_size):
            batch = collate_kto([self.eval_examples[i] for i in items], self.pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            losses, logratio, z0, policy = self._losses(batch)
            loss += losses.sum().item()
            for key, value in self._sums(batch, logratio, z0, policy).items():
                totals[key] = totals.get(key, 0) + value
        return {"eval_loss": loss / len(self.eval_examples), **class_metrics(totals, prefix="eval_")}

    # -- run ----------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        return self.session.fit(self)

    def cleanup(self) -> None:
        self.reference = None
        if self.session is not None:
            self.session.close()
