"""Group relative policy optimisation recipe (GRPO, Shao et al. 2024) with reward functions.

    recipe = GRPORecipe(config, ctx)
    recipe.setup(); result = recipe.train(); recipe.cleanup()

Rows are conversations. A row's prompt is every message before its last assistant turn (the whole
conversation when it has none, if it ends with a user or tool turn) and its reference answer is
that turn's content (None without one). Each optimizer step takes ``train.batch_size`` prompts
(times ``train.grad_accum``) and for each:

1. samples a group of G = ``grpo.num_generations`` completions (``temperature``, ``top_p``, at most
   ``max_new_tokens``) with oikyo's batched generation engine (:mod:`oikyo.serve.engine.core`, the path
   evaluation and serving use), from the one chat template's prompt tokens;
2. scores each completion with the configured rewards (:mod:`oikyo.train.rewards`): ``r`` is the
   weighted sum;
3. turns rewards into advantages within the group: ``A = (r - mean(r)) / (std(r) + eps)``, so only
   how a completion compares with its siblings counts (a group whose rewards are all equal teaches
   nothing and gets A = 0);
4. takes one gradient step on the clipped-surrogate policy loss over the completion tokens::

       ratio = exp(logp - logp_old)                         per token, (N,)
       loss_t = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)  [+ beta * KL_t]

   With one policy update per generation batch (as here, and TRL's default ``num_iterations=1``)
   the sampling policy *is* the current one, so ``logp_old = logp.detach()``: the ratio is 1, the
   clip never binds and the gradient is exactly that of ``-A * logp`` (REINFORCE with the group
   baseline). The general form is kept so the loss is the published one. Token losses are summed
   per completion and divided by ``max_new_tokens`` (Dr. GRPO's constant, Liu et al. 2025: no bias
   toward short or long answers), then averaged over completions. With beta 0, the groups whose
   rewards are all equal (A = 0, nothing to learn) are left out of the training forward: the same
   gradient, less work.

The optional KL term (``grpo.beta`` > 0) uses the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
against the starting model: the base with its LoRA adapter switched off (as the DPO recipe does), or
a frozen copy for full fine-tuning. The default beta is 0, as in DAPO and Dr. GRPO and TRL's
default: it saves the reference forward pass, and a run of a few hundred steps stays close to its
start anyway.

Generation follows the weights. The engine holds its own copy of the base model with prepacked
weights (its fastest form on CPU). For LoRA the base never changes: after each optimizer step the
adapter's matrices (a few MB) are handed to the engine as a fresh adapter, which the engine applies
with its LoRA kernels. For full fine-tuning every weight changes each step, so the engine runs
unpacked and the new weights are copied into it before each generation.

A group's prompt is computed once, not G times: in generation (:func:`group_engine` prefills each
distinct prompt and copies its KV cache to the siblings) and in the training forward
(:func:`completion_logprobs`). Measured on the bundled model (AMD EPYC, 2 threads,
``bench/bench_grpo.py --forms-only``: one generation batch of 4 support-ticket prompts x 8
completions, at most 64 tokens, 1934 generated, best of 2): packed weights + adapter with the
prompt prefilled once 6.3 s (307 tokens/s); prefilled per request 8.3 s (234); unpacked, prefilled
once, which is what generating on the live model's plain weights costs, 9.4 s (205). The adapter
hand-over costs ~45 ms a step.

Seeds: completion k of prompt i at step s is sampled with its own generator seeded from
(``train.seed``, s, i, k), and the engine's per-request generators make a request's tokens
independent of its batch-mates, so a run resumed from a checkpoint samples exactly the groups an
uninterrupted run samples. Several processes (``train.nproc``, LoRA under DDP) take the same seeds:
each generates the groups of its share of the prompts with its own engine, which are the groups one
process samples, and a group's advantages stay within that process.

Metrics per step: ``reward`` (mean over completions) and ``reward/<name>`` for each reward,
``reward_std`` (mean within-group standard deviation), ``zero_std_groups`` (share of groups with
nothing to learn), ``completion_length`` (tokens), ``truncated`` (share that hit ``max_new_tokens``),
``kl`` (beta > 0), ``generation_s`` and ``generated_tokens_per_s``. Validation (``eval_every``)
generates one greedy answer per validation prompt: ``eval_reward`` is their mean reward and
``eval_loss`` its negative, so best checkpoints and early stopping keep the highest-reward weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from oikyo.train import TrainingError, data
from oikyo.train import rewards as reward_registry
from oikyo.train.config import TrainConfig
from oikyo.train.runner import (
    IGNORE_INDEX,
    RunContext,
    Session,
    TrainResult,
    _chunked_nll,
    _model_parts,
    build_model,
    frozen_reference,
    lora_kwargs,
    reference_forward,
    target_logprobs,
)

CLIP_EPSILON = 0.2  # PPO's clip range; binds only when a generation batch is reused for several updates
ADVANTAGE_EPS = 1e-4  # added to the group std (TRL's value)
MAX_ENGINE_BATCH = 64  # sequences decoded together by the generator (bounds its KV cache)
_MAX_LISTED = 5


# ----------------------------------------------------------------------------- math


def group_advantages(rewards, group_size: int, eps: float = ADVANTAGE_EPS):
    """``(r - group mean) / (group std + eps)`` for rewards laid out group after group: (n,) -> (n,).

    The std is the unbiased sample std within each group (as TRL computes it).
    """
    grouped = rewards.view(-1, group_size)  # (groups, G)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def policy_loss(logp, old_logp, advantages, epsilon: float = CLIP_EPSILON):
    """The clipped-surrogate loss of each token: ``-min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)``. All (N,)."""
    import torch

    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def kl_k3(logp, ref_logp):
    """Per-token estimate of KL(policy || reference), unbiased and never negative: (N,)."""
    import torch

    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def request_seed(seed: int, step: int, prompt: int, sample: int) -> int:
    """The sampling seed of completion ``sample`` of prompt ``prompt`` at optimizer step ``step``."""
    digest = hashlib.sha256(f"grpo:{seed}:{step}:{prompt}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ----------------------------------------------------------------------------- prompts


@dataclass
class Prompt:
    """One training prompt: its tokens (the chat template's generation prompt), messages and reference."""

    ids: list[int]
    messages: list[dict]
    reference: str | None

    def __len__(self) -> int:
        return len(self.ids)


def encode_prompts(rows, tokenizer, *, max_new_tokens: int, limit: data.TokenLimit, split: str = "train",
                   log=None) -> list[Prompt]:
    """Prompts of conversation rows. Other kinds stop the run; rows that give no prompt are counted in the log;
    a prompt with no room for ``max_new_tokens`` within the limit stops the run, naming the rows."""
    from oikyo.models.chat_template import encode_prompt

    prompts, skipped, too_long = [], 0, []
    for index, row in enumerate(rows):
        if row.get("messages") is None or row.get("chosen") is not None or row.get("desirable") is not None:
            kind = "preference" if row.get("chosen") is not None else (
                "unpaired_preference" if row.get("desirable") is not None else "text")
            raise TrainingError(f"grpo trains on conversations rows (prompts with reference answers); {split} row "
                                f"{index} is a {kind} row")
        messages = list(row["messages"])
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "assistant"), None)
        if last is not None:
            prompt, reference = messages[:last], messages[last].get("content") or ""
        else:
            prompt, reference = messages, None
        if not prompt or prompt[-1]["role"] not in ("user", "tool"):
            skipped += 1
            continue
        ids = encode_prompt(tokenizer, prompt, row.get("tools"))
        if len(ids) + max_new_tokens > limit.tokens:
            too_long.append((index, len(ids)))
            continue
        prompts.append(Prompt(ids=ids, messages=prompt, reference=reference))
    if too_long:
        listed = "; ".join(f"row {i} ({n} prompt tokens)" for i, n in too_long[:_MAX_LISTED])
        more = f"; and {len(too_long) - _MAX_LISTED} more" if len(too_long) > _MAX_LISTED else ""
        raise TrainingError(
            f"{len(too_long)} {split} prompt(s) leave no room for grpo.max_new_tokens ({max_new_tokens}) within "
            f"{limit.describe()}: {listed}{more}. Fix: raise data.max_length, lower grpo.max_new_tokens or drop "
            "these rows (oikyo never truncates silently)."
        )
    if skipped and log:
        log(f"{split}: skipped {skipped} row(s) that give no prompt (no user or tool turn before the answer)")
    if not prompts and split == "train":
        raise TrainingError(f"the {split} data is empty: no rows give a prompt to sample completions for")
    return prompts


# ----------------------------------------------------------------------------- the generator


def group_engine(model_dir: Path, **kwargs):
    """A :class:`GroupEngine`: the serving engine that prefills each distinct prompt of an admitted batch once."""
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.sampling import choose_tokens

    class GroupEngine(GenerationEngine):
        """The serving engine, with the G requests of one prompt prefilled once.

        GRPO hands the engine G requests per prompt. The engine would prefill each of them, G times
        the same forward; here the distinct (prompt, adapter) pairs of the admitted requests are
        prefilled (the engine's own prefill), and each duplicate gets its leader's KV cache copied
        into its slot (the cache's own ``move``) and samples its first token, with its own generator,
        from the leader's logits. Everything after (decoding, sampling, finishing) is the engine's.
        On the benchmark's shape (4 prompts x 8, ~90 prompt tokens) that removes 7/8 of the prefill
        work. Tested: the same tokens as the plain engine for the same seeds.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.mixed_steps = False  # every admission goes through _prefill below, duplicates shared

        def _forward(self, *args, **kwargs):
            logits = super()._forward(*args, **kwargs)
            self._last_logits = logits  # (rows, vocab): the prefill's, read by _prefill below
            return logits

        def _prefill(self, sequences) -> None:
            leaders: dict[tuple, object] = {}
            followers = []
            for sequence in sequences:
                key = (tuple(sequence.request.prompt_ids), sequence.adapter)
                if key in leaders:
                    followers.append((sequence, leaders[key]))
                else:
                    leaders[key] = sequence
            if not followers:
                return super()._prefill(sequences)
            first = len(self._active)
            self._cache.reserve(first + len(sequences), max(s.prompt_len + s.max_new for s in sequences))
            heads = list(leaders.values())
            super()._prefill(heads)  # heads take slots first .. first + len(heads) - 1, in order
            logits = self._last_logits  # (heads, vocab)
            row = {id(s): i for i, s in enumerate(heads)}
            for sequence, leader in followers:
                self._cache.move(first + row[id(leader)], len(self._active), leader.prompt_len)
                sequence.length = sequence.prompt_len
                sequence.admitted_step = self._counters["steps"]
                self._counters["prompt_tokens"] += sequence.prompt_len
                self._active.append(sequence)
            rows = logits[[row[id(leader)] for _, leader in followers]]  # (followers, vocab)
            tokens = choose_tokens(rows, [sequence.sampling for sequence, _ in followers])
            for (sequence, _), token in zip(followers, tokens):
                self._accept(sequence, token)

    return GroupEngine(model_dir, **kwargs)


class PolicyGenerator:
    """Samples completions with oikyo's generation engine, following the policy's weights.

    LoRA: the engine keeps its own packed copy of the base model; :meth:`sync` hands it the policy's
    adapter (written to a scratch folder, alternating between two names so the engine reloads it).
    Full fine-tuning: the engine runs unpacked and :meth:`sync` copies every weight into it.
    """

    ADAPTER = "policy"

    def __init__(self, model_dir: Path, *, device: str, max_batch_size: int, lora: bool):
        self.lora = lora
        self.engine = group_engine(
            model_dir, device=device, max_batch_size=max_batch_size, packed_weights=None if lora else False
        )
        self.tokenizer = self.engine.tokenizer
        self._scratch = tempfile.TemporaryDirectory(prefix="oikyo-grpo-")
        self._flip = 0
        self.synced_step: int | None = None

    def sync(self, model, step: int) -> None:
        """Make the engine generate with ``model``'s current weights (no-op when already synced at ``step``)."""
        import torch

        if self.synced_step == step:
            return
        if self.lora:
            self._flip ^= 1
            folder = Path(self._scratch.name) / f"{self.ADAPTER}-{self._flip}"
            model.save_pretrained(folder)  # adapter_config.json + adapter_model.safetensors
            self.engine.add_adapter(self.ADAPTER, folder)  # a new folder: reloaded at the next request
        else:
            live = dict(model.named_parameters())
            with torch.no_grad():
                for name, param in self.engine.model.named_parameters():
                    param.copy_(live[name])
        self.synced_step = step

    def generate(self, prompts: list[list[int]], seeds: list[int], *, max_new_tokens: int, temperature: float,
                 top_p: float):
        """One result per (prompt, seed): :class:`oikyo.serve.engine.requests.GenerationResult`."""
        from oikyo.serve.engine.requests import GenerationRequest

        adapter = self.ADAPTER if self.lora else None
        requests = [GenerationRequest(prompt_ids=list(ids), max_new_tokens=max_new_tokens, temperature=temperature,
                                      top_p=top_p, seed=seed, adapter=adapter) for ids, seed in zip(prompts, seeds)]
        return self.engine.generate(requests)

    def close(self) -> None:
        self.engine = None
        self._scratch.cleanup()


# ----------------------------------------------------------------------------- the recipe


class GRPORecipe:
    """setup() → train() → cleanup() for method grpo."""

    def __init__(self, config: TrainConfig, ctx: RunContext):
        self.config, self.ctx = config, ctx
        self.session: Session | None = None
        self.generator: PolicyGenerator | None = None
        self.reference = None  # frozen copy for full fine-tuning with beta > 0; LoRA disables its adapter instead
        self._plans: dict[int, list] = {}
        self._generation = {"seconds": 0.0, "tokens": 0, "step": -1}

    def setup(self) -> None:
        config, grpo = self.config, self.config.grpo
        self.rewards = reward_registry.build(grpo.rewards, grpo.reward_modules)  # fail before loading anything
        ctx = dataclasses.replace(self.ctx, on_metrics=self._report)
        self.session = session = Session(config, ctx)
        self.pad_id = session.tokenizer.pad_token_id if session.tokenizer.pad_token_id is not None else 0
        limit = data.TokenLimit(config.data.max_length, session.context_length)
        encode = lambda rows, split: encode_prompts(  # noqa: E731
            rows, session.tokenizer, max_new_tokens=grpo.max_new_tokens, limit=limit, split=split, log=session.log)
        self.prompts = encode(self.ctx.train_rows(), "train")
        self.eval_prompts = []
        if self.ctx.eval_rows is not None and config.data.eval_split is not None:
            rows = list(itertools.islice(self.ctx.eval_rows(), config.data.max_eval_rows))
            self.eval_prompts = encode(rows, "validation") if rows else []
        session.log(
            f"{len(self.prompts)} training prompts x {grpo.num_generations} completions, "
            f"{len(self.eval_prompts)} validation prompts; rewards: "
            + ", ".join(f"{r.name} x {r.weight:g}" for r in self.rewards.rewards)
        )
        lora = config.method.finetune in ("lora", "qlora")
        group_rows = config.train.batch_size * grpo.num_generations
        engine_batch = min(MAX_ENGINE_BATCH, max(group_rows, len(self.eval_prompts), 1))
        self.generator = PolicyGenerator(
            self.ctx.model_dir, device=session.runtime.device, max_batch_size=engine_batch, lora=lora
        )
        model = build_model(
            self.ctx.model_dir, config.method.finetune, session.dtype, session.runtime.device, lora_kwargs(config),
            config.train.gradient_checkpointing,
        )
        if grpo.beta > 0:  # the KL term needs the starting point (copied before a resume loads weights)
            self.reference = frozen_reference(model, config.method.finetune)
        session.build(self, model=model)  # resumes from the newest checkpoint: nothing may draw random numbers after

    # -- what the session's loop asks for ---------------------------------------------------

    def plan(self, epoch: int) -> list:
        if epoch not in self._plans:
            train = self.config.train
            lengths = [len(p) for p in self.prompts]
            self._plans = {epoch: data.epoch_plan(lengths, train.batch_size, train.seed, epoch, train.group_by_length)}
        return self._plans[epoch]

    def make_batch(self, items: list) -> dict:
        """Sample G completions per prompt, score them, and collate prompt + completion sequences.

        Returns the groups as :func:`collate_groups` lays them out, plus advantages, rewards, group_std,
        zero_std, truncated (B*G,) and parts (B*G, rewards): each reward's own value.
        """
        import torch

        grpo, session = self.config.grpo, self.session
        G, step = grpo.num_generations, session.state.step
        self.generator.sync(session.model, step)
        prompts = [self.prompts[i].ids for i in items for _ in range(G)]
        seeds = [request_seed(self.config.train.seed, step, i, k) for i in items for k in range(G)]
        start = time.perf_counter()
        results = self.generator.generate(prompts, seeds, max_new_tokens=grpo.max_new_tokens,
                                          temperature=grpo.temperature, top_p=grpo.top_p)
        self._count_generation(step, time.perf_counter() - start, sum(r.completion_tokens for r in results))
        scored = [self.rewards.score(r.text, self.prompts[i].reference, self.prompts[i].messages)
                  for i, r in zip((i for i in items for _ in range(G)), results)]
        rewards = torch.tensor([total for total, _ in scored], dtype=torch.float32)  # (B*G,)
        names = [r.name for r in self.rewards.rewards]
        parts = torch.tensor([[p[n] for n in names] for _, p in scored], dtype=torch.float32)  # (B*G, rewards)
        grouped_std = rewards.view(-1, G).std(dim=1)  # (B,)
        batch = collate_groups([self.prompts[i].ids for i in items], [r.token_ids for r in results], self.pad_id)
        batch.update(
            advantages=group_advantages(rewards, G),
            rewards=rewards,
            parts=parts,
            group_std=grouped_std.repeat_interleave(G),
            zero_std=(grouped_std == 0).float().repeat_interleave(G),
            truncated=torch.tensor([float(r.finish_reason == "length") for r in results]),
        )
        return batch

    def count(self, batch: dict) -> int:
        return batch["completion_ids"].shape[0]  # completions

    def units(self, items: list) -> int:
        return len(items) * self.config.grpo.num_generations  # completions

    def tokens(self, batch: dict) -> int:
        """Tokens of the prompt + completion sequences trained on (each prompt counted once per completion)."""
        G = self.config.grpo.num_generations
        return int(batch["prompt_lengths"].sum()) * G + int(batch["completion_mask"].sum())

    def loss(self, batch: dict):
        """(sum over completions of token losses / max_new_tokens, metric sums over the completions).

        A group whose rewards are all equal has advantages 0: with beta = 0 its completions add exactly
        nothing to the loss or its gradient, so they are left out of the forward pass (late in a run,
        when most groups agree, that is most of the training compute). The gradient is the same.
        Several processes: a rank whose share has nothing to learn still runs its first group (advantages
        0, a zero gradient), because DDP needs every rank's backward to reach every parameter.
        """
        import torch

        grpo = self.config.grpo
        n = batch["completion_ids"].shape[0]
        lengths = batch["completion_mask"].sum(dim=1).clamp(min=1)  # (B*G,) completion tokens
        extras = self._extras(batch, lengths)
        trained = batch
        if grpo.beta == 0:
            learning = batch["zero_std"].view(-1, grpo.num_generations)[:, 0] == 0  # (B,) groups with spread
            if not learning.any():
                if self.session.dist is None:  # nothing to learn in this batch: no forward pass, a zero loss
                    return torch.zeros((), device=batch["completion_ids"].device, requires_grad=True), extras
                learning = torch.arange(learning.shape[0], device=learning.device) == 0  # (B,): the first group
            if not learning.all():
                trained = select_groups(batch, learning)
        logp, rows = completion_logprobs(self.session.model, trained)  # (N,), (N,): one per completion token
        per_token = policy_loss(logp, logp.detach(), trained["advantages"][rows])  # (N,)
        if grpo.beta > 0:
            kl = kl_k3(logp, self._reference_logps(batch).detach())  # (N,)
            per_token = per_token + grpo.beta * kl
            per_completion_kl = torch.zeros(n, dtype=kl.dtype, device=kl.device).index_add(0, rows, kl.detach())
            extras["kl"] = (per_completion_kl / lengths).sum().item()
        return per_token.sum() / grpo.max_new_tokens, extras

    def _extras(self, batch: dict, lengths) -> dict:
        """Metric sums over the step's completions (the session divides them by the completions)."""
        extras = {"reward": batch["rewards"].sum().item()}
        extras["reward_std"] = batch["group_std"].sum().item()
        extras["zero_std_groups"] = batch["zero_std"].sum().item()
        extras["completion_length"] = float(lengths.sum().item())
        extras["truncated"] = batch["truncated"].sum().item()
        for name, value in zip((r.name for r in self.rewards.rewards), batch["parts"].sum(0).tolist()):
            extras[f"reward/{name}"] = value
        return extras

    def _reference_logps(self, batch: dict):
        return reference_forward(lambda model, batch: completion_logprobs(model, batch)[0], self.session.model, self.reference, batch)

    def evaluate(self) -> dict | None:
        """Mean reward of one greedy answer per validation prompt (eval_loss: its negative)."""
        if not self.eval_prompts:
            return None
        grpo = self.config.grpo
        self.generator.sync(self.session.model, self.session.state.step)
        results = self.generator.generate([p.ids for p in self.eval_prompts], [0] * len(self.eval_prompts),
                                          max_new_tokens=grpo.max_new_tokens, temperature=0.0, top_p=1.0)
        total = sum(self.rewards.score(r.text, p.reference, p.messages)[0] for r, p in zip(results, self.eval_prompts))
        mean = total / len(self.eval_prompts)
        return {"eval_loss": -mean, "eval_reward": mean}

    # -- metrics ------------------------------------------------------------------------------

    def _count_generation(self, step: int, seconds: float, tokens: int) -> None:
        if self._generation["step"] != step:
            self._generation = {"seconds": 0.0, "tokens": 0, "step": step}
        self._generation["seconds"] += seconds
        self._generation["tokens"] += tokens

    def _report(self, step: int, metrics: dict) -> None:
        """The session's metrics plus this step's generation time and speed, to the caller."""
        seconds, tokens = self._generation["seconds"], self._generation["tokens"]
        metrics["generation_s"] = seconds
        metrics["generated_tokens_per_s"] = tokens / seconds if seconds > 0 else 0.0
        self.ctx.on_metrics(step, metrics)

    def train(self) -> TrainResult:
        return self.session.fit(self)

    def cleanup(self) -> None:
        self.reference = None
        if self.generator is not None:
            self.generator.close()
            self.generator = None
        if self.session is not None:
            self.session.close()


def collate_groups(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict:
    """Each prompt once and its G completions, both right-padded.

    prompt_ids (B, p) and prompt_lengths (B,); completion_ids and completion_mask (B*G, c), the
    completions of prompt b in rows b*G .. b*G+G-1.
    """
    import torch

    width = max(len(p) for p in prompts)
    prompt_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(prompts):
        prompt_ids[row, : len(ids)] = torch.tensor(ids)
    width = max(len(c) for c in completions)
    completion_ids = torch.full((len(completions), width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(completions), width), dtype=torch.long)
    for row, ids in enumerate(completions):
        completion_ids[row, : len(ids)] = torch.tensor(ids)
        completion_mask[row, : len(ids)] = 1
    return {"prompt_ids": prompt_ids, "prompt_lengths": torch.tensor([len(p) for p in prompts]),
            "completion_ids": completion_ids, "completion_mask": completion_mask}


def select_groups(batch: dict, keep) -> dict:
    """The groups of a :func:`collate_groups` batch where ``keep`` (B,) is true, with their completions' rows.

    Per-batch entries that are not rows (a multi-process run's stand-in mark) are left out.
    """
    group = batch["completion_ids"].shape[0] // batch["prompt_ids"].shape[0]
    rows = keep.repeat_interleave(group)  # (B*G,)
    return {"prompt_ids": batch["prompt_ids"][keep], "prompt_lengths": batch["prompt_lengths"][keep],
            **{k: v[rows] for k, v in batch.items() if k not in ("prompt_ids", "prompt_lengths") and v.dim()}}


def completion_logprobs(model, batch: dict):
    """Log-probabilities of every completion token of a :func:`collate_groups` batch: (N,) and their rows (N,).

    The G completions of a prompt share it, so the prompt runs through the model once, not G times:
    one forward over the prompts (B, p) fills a KV cache, which is repeated G times along the batch
    and attended to by one forward over the completions (B*G, c), each at positions continuing its
    own prompt (padded prompt positions hidden). Gradients flow into the prompt pass through the
    cache. With support-ticket prompts of ~90 tokens and completions of ~30, G=8, that is ~3x fewer
    tokens through the model than G full sequences. Same values as :func:`target_logprobs` on the
    concatenated sequences (tested); models whose logits are more than head(hidden), and gradient
    checkpointing (which turns the cache off), take that plain path instead.
    """
    import torch

    prompts, lengths = batch["prompt_ids"], batch["prompt_lengths"]  # (B, p), (B,)
    completions, mask = batch["completion_ids"], batch["completion_mask"].bool()  # (B*G, c)
    group = completions.shape[0] // prompts.shape[0]
    parts = _model_parts(model)
    if parts is None or _checkpointing(model):
        return target_logprobs(model, _full_sequences(batch, group))
    trunk, head = parts
    out = trunk(input_ids=prompts, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # transformers 5.25 renamed it
    cache.batch_repeat_interleave(group)  # (B*G, heads, p, dim) per layer, differentiable
    own = lengths.repeat_interleave(group)  # (B*G,) the prompt length of each completion
    p, c = prompts.shape[1], completions.shape[1]
    keys = torch.arange(p, device=prompts.device)[None, :] < own[:, None]  # (B*G, p): real prompt positions
    attention = torch.cat([keys, torch.ones_like(mask)], dim=1).long()  # (B*G, p + c)
    positions = own[:, None] + torch.arange(c, device=prompts.device)[None, :]  # (B*G, c)
    cache_arg = "cache" if "cache" in inspect.signature(trunk.forward).parameters else "past_key_values"
    hidden = trunk(input_ids=completions, attention_mask=attention, position_ids=positions, use_cache=True,
                   **{cache_arg: cache}).last_hidden_state  # (B*G, c, hidden)
    last = out.last_hidden_state[torch.arange(prompts.shape[0]), lengths - 1]  # (B, hidden): predicts token 0
    # The state that predicts completion token t: the prompt's last for t = 0, completion position t-1 after.
    predicting = torch.cat([last.repeat_interleave(group, 0)[:, None], hidden[:, :-1]], dim=1)  # (B*G, c, hidden)
    nll = _chunked_nll(head, predicting[mask], completions[mask])  # (N,)
    return -nll, mask.nonzero()[:, 0]


def _checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on (the name changed in transformers 5)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    new = hasattr(type(base), "is_activation_checkpointing")
    name = "is_activation_checkpointing" if new else "is_gradient_checkpointing"
    return bool(getattr(base, name, False))


def _full_sequences(batch: dict, group: int) -> dict:
    """The plain layout: prompt + completion per row, labels on the completion (for :func:`target_logprobs`)."""
    prompts = [row[:n].tolist() for row, n in zip(batch["prompt_ids"], batch["prompt_lengths"].tolist())]
    completions = [row[: int(m.sum())].tolist() for row, m in zip(batch["completion_ids"], batch["completion_mask"])]
    # Right padding after the completion is never attended to by a real token: its id does not matter.
    full = collate_completions([p for p in prompts for _ in range(group)], completions, pad_id=0)
    return {k: v.to(batch["prompt_ids"].device) for k, v in full.items()}


def collate_completions(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> dict:
    """Right-padded prompt + completion sequences; labels on the completion tokens only. (rows, seq) each."""
    import torch

    sequences = [list(p) + list(c) for p, c in zip(prompts, completions)]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (prompt, sequence) in enumerate(zip(prompts, sequences)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        labels[row, len(prompt) : len(sequence)] = torch.tensor(sequence[len(prompt) :])
        attention[row, : len(sequence)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
