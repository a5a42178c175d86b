"""Run a fine-tuning job: the entry point the job system calls, and the loop the recipes share.

    result = run_training(config, run_dir=run_dir, model_dir=model_dir,
                          train_rows=lambda: rows, eval_rows=lambda: val_rows,
                          on_metrics=lambda step, m: print(step, m), should_stop=lambda: False, log=print)
    merge_adapter(model_dir, result.output_dir, out_dir)   # LoRA runs: one plain transformers model

:func:`run_training` picks the recipe by ``method.name`` (:mod:`oikyo.train.sft`, ``dpo``, ``kto``,
``orpo``, ``pretrain``, ...) and runs its ``setup()`` → ``train()`` → ``cleanup()``. A recipe knows
its data and its loss; the :class:`Session` here owns what they share: threads and seeds, the model
(LoRA via peft, full, or QLoRA), AdamW and the scheduler, checkpoints and resume, and the
optimizer-step loop with evaluation, early stopping, cancellation and metrics. It is a plain
PyTorch loop (no HF Trainer).

Speed on small models comes from not wasting work: no gradient checkpointing unless asked,
length-grouped batches (or packing) instead of random padding, and the output head applied only to
positions that carry a label (``target_logprobs``): the 49k-wide logits are never computed for
prompt or padding tokens.

Run directory: ``config.yaml`` (the resolved config; written here only when the job system has
not written it), ``checkpoints/step-NNNNNN/`` (see :mod:`oikyo.train.checkpoints`) and ``output/`` (the exported
adapter or model plus tokenizer files).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from oikyo.train import TrainingError
from oikyo.train import checkpoints as ckpt
from oikyo.train.config import TrainConfig, config_hash, dump_yaml, resolve_runtime

IGNORE_INDEX = -100
CHUNK_TOKENS = 4096  # above this many target tokens, output-head logits are computed in chunks
_CHECKPOINT_ONLY = {ckpt.COMPLETE, ckpt.TRAINER_STATE, ckpt.OPTIMIZER_TENSORS, ckpt.OPTIMIZER_JSON, ckpt.SCHEDULER_JSON,
                    "dcp"}


@dataclass
class TrainResult:
    """How a run ended and where its weights are."""

    status: str  # "succeeded" | "cancelled" | "stopped_early"
    steps: int
    tokens: int
    final_checkpoint: Path
    best_checkpoint: Path | None
    best_eval_loss: float | None
    output_dir: Path  # run_dir/output (not written for a cancelled run)
    replay: dict | None = None  # the replay set mixed in (data.mix), for the model version's lineage


@dataclass
class RunContext:
    """Where a run lives and how it talks to its caller (the arguments of :func:`run_training`)."""

    run_dir: Path
    model_dir: Path
    train_rows: Callable[[], Iterable[dict]]
    eval_rows: Callable[[], Iterable[dict]] | None
    on_metrics: Callable[[int, dict], None]
    should_stop: Callable[[], bool]
    log: Callable[[str], None]
    adapter_dir: Path | None = None  # model.start=continue: the LoRA adapter to train further
    replay: object | None = None  # an oikyo.data.replay.Replay resolved by the caller (data.mix_dataset=parent)


def run_training(
    config: TrainConfig,
    *,
    run_dir: Path,
    model_dir: Path,
    train_rows: Callable[[], Iterable[dict]],
    eval_rows: Callable[[], Iterable[dict]] | None,
    on_metrics: Callable[[int, dict], None],
    should_stop: Callable[[], bool],
    log: Callable[[str], None],
    adapter_dir: Path | None = None,
    replay=None,
) -> TrainResult:
    """Train (or resume) the run in ``run_dir``; see docs/contracts-training.md.

    ``adapter_dir`` (model.start=continue): a LoRA adapter of ``model_dir`` that is loaded trainable and
    trained further instead of a new one. ``replay`` (data.mix_dataset=parent): the replay rows, as an
    :class:`oikyo.data.replay.Replay` the job system resolved from the parent's lineage.
    """
    if config.train.nproc > 1 and not _in_process_group():
        # The worker's side of a multi-process run: torchrun starts train.nproc processes, each of
        # which comes back here inside its process group (see oikyo.train.launch).
        from oikyo.train.launch import run_distributed

        return run_distributed(config, run_dir=Path(run_dir), model_dir=Path(model_dir), train_rows=train_rows,
                               eval_rows=eval_rows, on_metrics=on_metrics, should_stop=should_stop, log=log,
                               adapter_dir=adapter_dir, replay=replay)
    ctx = RunContext(Path(run_dir), Path(model_dir), train_rows, eval_rows, on_metrics, should_stop, log,
                     Path(adapter_dir) if adapter_dir else None, replay)
    if config.method.name == "dpo":
        from oikyo.train.dpo import DPORecipe as Recipe
    elif config.method.name == "grpo":
        from oikyo.train.grpo import GRPORecipe as Recipe
    elif config.method.name == "kto":
        from oikyo.train.kto import KTORecipe as Recipe
    elif config.method.name == "orpo":
        from oikyo.train.orpo import ORPORecipe as Recipe
    elif config.method.name == "pretrain":
        from oikyo.train.pretrain import PretrainRecipe as Recipe
    else:
        from oikyo.train.sft import SFTRecipe as Recipe
    recipe = Recipe(config, ctx)
    try:
        recipe.setup()
        return recipe.train()
    except (MemoryError, RuntimeError) as error:
        if _is_out_of_memory(error):
            raise TrainingError(
                f"ran out of memory ({str(error).splitlines()[0][:200]}). Lower train.batch_size (raise "
                "train.grad_accum to keep the effective batch), lower data.max_length, or turn on "
                "train.gradient_checkpointing."
            ) from error
        raise
    finally:
        recipe.cleanup()


def _in_process_group() -> bool:
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text


# ----------------------------------------------------------------------------- builders


def lora_kwargs(config: TrainConfig) -> dict:
    """peft.LoraConfig keyword arguments from the config's lora group."""
    return {
        "r": config.lora.rank,
        "lora_alpha": config.lora.alpha,
        "lora_dropout": config.lora.dropout,
        "target_modules": config.lora.target_modules,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def scheduler_kwargs(config: TrainConfig, total_steps: int) -> dict:
    """transformers.get_scheduler keyword arguments (name, warmup, total steps)."""
    train = config.train
    warmup = train.warmup_steps if train.warmup_steps is not None else math.ceil(train.warmup_ratio * total_steps)
    name = "constant_with_warmup" if train.scheduler == "constant" else train.scheduler
    return {"name": name, "num_warmup_steps": min(warmup, total_steps), "num_training_steps": total_steps}


def frozen_reference(model, finetune: str):
    """The reference model of the preference and RL recipes: a frozen copy of the starting weights for
    full fine-tuning (taken before a resume loads trained weights), None for LoRA, whose reference is
    the policy itself with its adapter switched off (peft's ``disable_adapter()``, no second copy)."""
    import copy

    return copy.deepcopy(model).eval().requires_grad_(False) if finetune == "full" else None


def reference_forward(fn, policy, reference, batch: dict):
    """``fn(model, batch)`` without gradients on the starting weights: ``reference`` when there is
    one (see :func:`frozen_reference`), else ``policy`` with its LoRA adapter switched off."""
    import torch

    with torch.no_grad():
        if reference is not None:
            return fn(reference, batch)
        with policy.disable_adapter():
            return fn(policy, batch)


def build_model(model_dir: Path, finetune: str, dtype, device: str, lora: dict, gradient_checkpointing: bool,
                adapter_dir: Path | None = None):
    """The trainable model: the base model, wrapped with LoRA adapters for lora/qlora.

    ``adapter_dir``: load that trained adapter (trainable) instead of creating a new one; its own shape
    (rank, alpha, target modules) is used, only the dropout comes from ``lora``.
    """
    import torch

    if adapter_dir is not None and finetune not in ("lora", "qlora"):
        raise TrainingError(f"an adapter can be trained further with method.finetune lora or qlora, not {finetune}")
    if finetune == "qlora":
        model = _load_4bit(model_dir, device)
    else:
        from oikyo.models.loading import load_model

        # Full fine-tuning keeps float32 master weights (bf16 runs under autocast); LoRA may store
        # the frozen base in bf16 to halve its memory (the adapters stay float32).
        weights_dtype = torch.float32 if finetune == "full" else dtype
        model = load_model(model_dir, dtype=weights_dtype, device=device)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if finetune in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        from oikyo.train.fused_lora import fuse_lora_layers

        if adapter_dir is not None:
            model = _load_adapter(model, Path(adapter_dir), lora)
        else:
            model = get_peft_model(model, LoraConfig(**lora))
        fuse_lora_layers(model)  # same math, one GEMM for the adapter's product, scaling and sum
    return model.train()


def _load_adapter(model, adapter_dir: Path, lora: dict):
    """``model`` with the LoRA adapter in ``adapter_dir`` loaded trainable (model.start=continue)."""
    from peft import PeftConfig, PeftModel

    from oikyo.models.loading import require_safetensors

    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json is missing)")
    require_safetensors(adapter_dir, "adapter")  # else peft would fall back to unpickling adapter_model.bin
    adapter_config = PeftConfig.from_pretrained(str(adapter_dir))
    adapter_config.lora_dropout = lora["lora_dropout"]  # a training setting, not part of the adapter's shape
    adapter_config.inference_mode = False
    return PeftModel.from_pretrained(model, str(adapter_dir), config=adapter_config, is_trainable=True)


def _load_4bit(model_dir: Path, device: str):
    """The base model quantized to 4-bit NF4 with bitsandbytes (QLoRA; CUDA only)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from oikyo.models.loading import require_safetensors

    if device != "cuda":
        raise TrainingError("QLoRA needs a CUDA GPU; use method.finetune=lora on this machine")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    require_safetensors(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=quantization, local_files_only=True, device_map={"": 0}, use_safetensors=True
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def build_optimizer(model, lr: float, weight_decay: float, fused: bool):
    """AdamW over the trainable parameters; matrices decay, vectors (norms, biases) do not."""
    import torch

    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)


# ----------------------------------------------------------------------------- forward helpers


# Config attributes of models whose logits are more than head(hidden) (softcapping, scaling).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def _model_parts(model):
    """(trunk, head) of a causal LM, or None when its logits are more than head(hidden)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if any(getattr(config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return None
    trunk, head = base.get_decoder(), base.get_output_embeddings()
    if trunk is None or head is None or trunk is base:
        return None
    return trunk, head


def _chunked_nll(head, hidden, targets):
    """Per-token negative log-likelihood, logits in chunks recomputed in backward (bounded memory)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    def piece(h, t):
        return F.cross_entropy(head(h).float(), t, reduction="none")  # (chunk,)

    if hidden.shape[0] <= CHUNK_TOKENS:
        return piece(hidden, targets)
    parts = [
        checkpoint(piece, h, t, use_reentrant=False)
        for h, t in zip(hidden.split(CHUNK_TOKENS), targets.split(CHUNK_TOKENS))
    ]
    return torch.cat(parts)


def target_logprobs(model, batch: dict):
    """Log-probabilities of the target tokens: labels != IGNORE_INDEX after the causal shift.

    Returns (logp (N,), rows (N,)): one entry per target token, and the batch row it belongs to.
    The output head runs on those N positions only, never on prompt or padding positions. The batch
    must be right-padded (as :func:`oikyo.train.data.collate` makes it).
    """
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:]  # (batch, seq-1): token t+1 is predicted at position t
    mask = targets != IGNORE_INDEX  # (batch, seq-1)
    # Batches are right-padded and attention is causal, so no real token can see a pad token: the
    # padding mask changes nothing for the positions that count, and leaving it out lets sdpa use its
    # fast causal kernel instead of the masked path. Packed batches carry position_ids instead.
    inputs = {k: batch[k] for k in ("input_ids", "position_ids") if k in batch}
    parts = _model_parts(model)
    if parts is not None:
        trunk, head = parts
        hidden = trunk(**inputs, use_cache=False).last_hidden_state  # (batch, seq, hidden)
        selected = hidden[:, :-1][mask]  # (N, hidden)
        nll = _chunked_nll(head, selected, targets[mask])  # (N,)
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1]  # (batch, seq-1, vocab)
        nll = F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")  # (N,)
    rows = mask.nonzero()[:, 0]  # (N,)
    return -nll, rows


# ----------------------------------------------------------------------------- the session


@dataclass
class LoopState:
    """Where the run is; saved in every checkpoint's trainer_state.json."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0  # next batch of the epoch's plan (global: the same at every world size)
    samples: int = 0  # examples (or packed blocks) trained on so far, over all processes
    tokens: int = 0  # non-padding tokens seen
    best_eval_loss: float | None = None
    patience_best: float | None = None  # the loss an evaluation must beat by min_delta
    bad_evals: int = 0
    last_eval_step: int = -1
    last_eval_loss: float | None = None


class Session:
    """What every recipe shares: runtime, model, optimizer, scheduler, checkpoints and the step loop.

    A recipe creates it in ``setup()``, calls :meth:`build` once its data is encoded, and hands
    itself to :meth:`fit` in ``train()``. The recipe supplies ``plan(epoch)`` (batches of example
    indices), ``make_batch(items)`` (CPU tensors), ``count(batch)`` (loss units: target tokens or
    pairs), ``units(items)`` (the same count from the indices alone), ``tokens(batch)`` (non-padding
    tokens), ``loss(batch)`` ((loss summed over units, extra metric sums)) and ``evaluate()`` (a
    dict with eval_loss, or None without eval data); optionally ``step_metrics(sums)``, which turns a
    step's summed extra metrics into reported ones (by default each sum is divided by the step's units).

    Loss weighting: a step's gradient is its summed loss divided by the epoch's mean units per
    step (not by its own units), so every trained token weighs the same over an epoch however the
    length-grouped batches split it; a batch of long answers is not averaged down to the weight
    of a batch of short ones. The reported ``loss`` is still the step's mean over its own units.

    Several processes (``train.nproc``, inside a torchrun group; :mod:`oikyo.train.distributed`): each
    rank trains on its share of every global micro-batch under DDP (LoRA) or FSDP2 (full fine-tuning),
    with its loss scaled by the world size so that their gradient average equals the one-process sum;
    metrics are summed over the ranks, every rank evaluates the same validation rows (so early stopping
    agrees), a cancel request seen by one rank stops all at the same step, and checkpoints are written
    with DCP.
    """

    def __init__(self, config: TrainConfig, ctx: RunContext):
        import torch
        from transformers import set_seed

        from oikyo.models.loading import context_length, load_tokenizer

        from oikyo.train import distributed

        self.config, self.ctx = config, ctx
        self.dist = distributed.current()
        self.rank = self.dist.rank if self.dist else 0
        self.runtime = resolve_runtime(config)
        threads = self.runtime.num_threads
        if self.dist and config.train.num_threads == "auto":  # the cores are shared by the node's ranks
            threads = max(1, threads // self.dist.local_world)
        torch.set_num_threads(threads)
        set_seed(config.train.seed)
        self.device = torch.device(self.runtime.device)
        if self.dist and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.dtype = torch.bfloat16 if self.runtime.dtype == "bfloat16" else torch.float32
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints = ctx.run_dir / "checkpoints"
        self.hash = config_hash(config)
        if self.rank == 0 and not (ctx.run_dir / "config.yaml").exists():  # the job system writes it when it queues the run
            (ctx.run_dir / "config.yaml").write_text(dump_yaml(config, header=f"config_hash {self.hash}"))
        self.log(
            f"config_hash {self.hash[:16]}; device={self.runtime.device} dtype={self.runtime.dtype} "
            f"num_threads={threads}" + (f" processes={self.dist.world}" if self.dist else "")
        )
        self.tokenizer = load_tokenizer(ctx.model_dir)
        self.context_length = context_length(ctx.model_dir)
        self.state = LoopState()
        self.last_saved_step = -1
        self._scales: dict[int, float] = {}
        self.model = self.optimizer = self.scheduler = None
        self.ddp = None  # the DDP-wrapped loss in a multi-process LoRA run
        self.fsdp = None  # FSDP2's root around the model (a multi-process full fine-tune): fsdp(fn, *args)

    def log(self, message: str) -> None:
        """Say something to the caller (the job system appends it to run_dir/train.log)."""
        self.ctx.log(message)

    def close(self) -> None:
        """Drop the model and optimizer so their memory is freed before the caller goes on."""
        self.model = self.optimizer = self.scheduler = self.ddp = self.fsdp = None

    # -- setup ------------------------------------------------------------------------------

    def build(self, recipe, model=None) -> None:
        """Model, optimizer and scheduler for ``recipe``'s plan; then resume from the newest checkpoint."""
        from transformers import get_scheduler

        config = self.config
        self.total_steps = self._total_steps(recipe)
        if model is not None and self.ctx.adapter_dir is not None:
            raise TrainingError(f"method {config.method.name} cannot continue an adapter (model.start=continue)")
        self.model = model or build_model(
            self.ctx.model_dir,
            config.method.finetune,
            self.dtype,
            self.runtime.device,
            lora_kwargs(config),
            config.train.gradient_checkpointing,
            adapter_dir=self.ctx.adapter_dir,
        )
        if self.ctx.adapter_dir is not None:
            self.log(f"Continuing the adapter in {self.ctx.adapter_dir} (left as it is; the run writes its own)")
        self.is_peft = hasattr(self.model, "disable_adapter")
        if self.dist and config.method.finetune == "full":
            from oikyo.train import distributed

            self.fsdp = distributed.shard(self.model, self.dist, self.device)  # before the optimizer (shards)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in self.model.parameters())
        self.log(f"{config.method.name}/{config.method.finetune}: {trainable:,} trainable of {total:,} parameters")
        self.optimizer = build_optimizer(
            self.model, config.train.lr, config.train.weight_decay, fused=self.runtime.device == "cuda"
        )
        self.scheduler = get_scheduler(optimizer=self.optimizer, **scheduler_kwargs(config, self.total_steps))
        self._resume()
        if self.dist:
            import torch

            from oikyo.train import distributed

            if self.fsdp is None:
                self.ddp = distributed.wrap(self.model, recipe.loss, self.dist, self.device)
            # Distinct, reproducible random streams per rank (LoRA dropout) from here on.
            torch.manual_seed(config.train.seed + 7919 * self.rank + self.state.step)

    def _total_steps(self, recipe) -> int:
        train = self.config.train
        if train.max_steps is not None:
            return train.max_steps
        return sum(math.ceil(len(recipe.plan(epoch)) / train.grad_accum) for epoch in range(train.epochs))

    def _resume(self) -> None:
        from oikyo.train import distributed

        if self.rank == 0:
            for path in ckpt.clean_incomplete(self.checkpoints):
                self.log(f"Removed an incomplete checkpoint: {path.name}")
        if self.dist:
            distributed.barrier()  # nobody looks for the latest checkpoint while rank 0 cleans up
        latest = ckpt.latest_complete(self.checkpoints)
        if latest is None:
            return
        saved = ckpt.read_state(latest)
        if saved.get("config_hash") != self.hash:
            self.log("Warning: the config changed since the checkpoint was written; resuming anyway")
        if distributed.is_dcp(latest):
            distributed.load_checkpoint(latest, self.model, self.optimizer)
        elif self.fsdp is not None:  # a one-process full fine-tune's checkpoint, resumed sharded
            distributed.load_single_process_checkpoint(latest, self.model, self.optimizer)
        else:
            self._load_weights(latest)
            ckpt.load_optimizer(self.optimizer, latest)
        ckpt.load_scheduler(self.scheduler, latest)
        self.state = LoopState(**{k: saved[k] for k in LoopState.__dataclass_fields__ if k in saved})
        self.last_saved_step = self.state.step
        ckpt.set_rng_state(saved["rng"])  # last: nothing after this may draw random numbers
        self.log(
            f"Resumed from {latest.name}: epoch {self.state.epoch}, batch {self.state.batch_index}, "
            f"{self.state.samples} samples, {self.state.tokens} tokens seen"
            + (f" (saved by {saved['world_size']} processes)" if saved.get("world_size", 1) > 1 else "")
        )

    def _write_weights(self, folder: Path, state_dict: dict | None = None) -> None:
        """Weights only, as safetensors: the adapter (peft layout) or the full model (transformers layout);
        ``state_dict``: the full weights gathered from FSDP2 shards (see :func:`distributed.gather_full`)."""
        self.model.save_pretrained(folder, state_dict=state_dict)
        (folder / "README.md").unlink(missing_ok=True)  # peft's model-card stub

    def _load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        if self.is_peft:
            from peft import set_peft_model_state_dict

            weights = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
            result = set_peft_model_state_dict(self.model, weights)
            if getattr(result, "unexpected_keys", None):
                raise TrainingError(f"checkpoint {folder.name} does not match the adapter: {result.unexpected_keys[:3]}")
            return
        weights = load_file(str(folder / "model.safetensors"), device=str(self.device))
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        tied = {k for k in missing if k.endswith("lm_head.weight")}
        if unexpected or set(missing) - tied:
            raise TrainingError(f"checkpoint {folder.name} does not match the model: {(missing or unexpected)[:3]}")

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, recipe) -> TrainResult:
        """Optimizer steps until the end, a cancel request or early stopping; then finish the run."""
        state, accum = self.state, self.config.train.grad_accum
        while state.step < self.total_steps:
            plan = recipe.plan(state.epoch)
            if state.batch_index >= len(plan):
                state.epoch, state.batch_index = state.epoch + 1, 0
                continue
            if self._should_stop():
                self.log(f"Cancel requested at step {state.step}")
                return self._finish("cancelled", recipe)
            group = plan[state.batch_index : state.batch_index + accum]
            metrics = self._optimizer_step(recipe, group, self._units_per_step(recipe, state.epoch))
            state.step += 1
            state.batch_index += len(group)
            state.samples += sum(len(items) for items in group)
            metrics["epoch"] = state.epoch + state.batch_index / len(plan)
            if state.batch_index >= len(plan):
                state.epoch, state.batch_index = state.epoch + 1, 0
            stop_early, new_best = self._maybe_evaluate(recipe, metrics)
            self.ctx.on_metrics(state.step, metrics)
            if stop_early and state.step < self.total_steps:
                self.log(f"Early stopping at step {state.step}: no improvement in {state.bad_evals} evaluations")
                return self._finish("stopped_early", recipe)
            save_every = self.config.checkpoint.save_every
            # A new best validation loss is saved too, so the best-k checkpoints hold the best weights.
            if (save_every and state.step % save_every == 0) or (new_best and self.config.checkpoint.keep_best):
                self._save()
        return self._finish("succeeded", recipe)

    def _should_stop(self) -> bool:
        stop = self.ctx.should_stop()
        if self.dist:
            from oikyo.train import distributed

            return distributed.any_true(stop, self.device)
        return stop

    def _units_per_step(self, recipe, epoch: int) -> float:
        """The epoch's mean loss units (target tokens or pairs) per optimizer step (see the class docstring)."""
        if epoch not in self._scales:
            plan = recipe.plan(epoch)
            steps = math.ceil(len(plan) / self.config.train.grad_accum)
            self._scales = {epoch: max(1.0, sum(recipe.units(items) for items in plan) / steps)}
        return self._scales[epoch]

    def _optimizer_step(self, recipe, group: list, units_per_step: float) -> dict:
        """Forward/backward each micro-batch of ``group``, clip, step; return the step's metrics."""
        import torch

        start = time.perf_counter()
        if self.dist:
            from oikyo.train import distributed

            shares = [distributed.share(items, self.dist) for items in group]  # this rank's part of each
            group = [items for items, _ in shares]
            weights = [float(self.dist.world) if real else 0.0 for _, real in shares]
        else:
            weights = [1.0] * len(group)
        batches = [recipe.make_batch(items) for items in group]
        for batch, weight in zip(batches, weights):
            if not weight:  # a stand-in says so: a loss term reduced over the global batch leaves it out (KTO)
                batch[distributed.STAND_IN] = torch.tensor(True)
        units = sum(recipe.count(b) for b, w in zip(batches, weights) if w)  # for the reported mean loss
        tokens = sum(recipe.tokens(b) for b, w in zip(batches, weights) if w)
        self.model.train()
        loss_sum, extras = 0.0, {}
        for index, (batch, weight) in enumerate(zip(batches, weights)):
            batch = {k: v.to(self.device) for k, v in batch.items()}
            last = index == len(batches) - 1
            # DDP and FSDP2 average gradients over the ranks: scaling by the world size turns that into
            # the sum a single process would have; they sync on the last micro-batch only.
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            if self.fsdp is not None:
                from oikyo.train import distributed

                distributed.gradient_sync(self.fsdp, last)  # reduce-scatter once per optimizer step
            with sync:
                with self.autocast():
                    if self.ddp is not None:
                        loss, extra = self.ddp(batch)
                    else:
                        loss, extra = self.fsdp(recipe.loss, batch) if self.fsdp is not None else recipe.loss(batch)
                (loss / units_per_step if self.dist is None else loss * (weight / units_per_step)).backward()
            if weight:
                loss_sum += loss.item()
            for key, value in extra.items():  # a stand-in pass adds zeros: the same keys on every rank
                extras[key] = extras.get(key, 0.0) + (value if weight else 0.0)
        if self.dist:
            from oikyo.train import distributed

            keys = sorted(extras)
            totals = distributed.sum_all([loss_sum, units, tokens, *(extras[k] for k in keys)], self.device)
            loss_sum, units, tokens = totals[0], totals[1], int(totals[2])
            extras = dict(zip(keys, totals[3:]))
        units = max(1, units)
        limit = self.config.train.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, limit)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor over the ranks' shards
            grad_norm = grad_norm.full_tensor()
        grad_norm = grad_norm.item()
        if self.dist and grad_norm == 0.0:
            # Nothing to learn in the whole step (GRPO groups that all agree): one process's backward reached
            # no parameter, so AdamW skipped them all; the ranks' zero-weighted passes left zero gradients,
            # which AdamW would not skip (momentum, weight decay). Drop them, as one process has none.
            self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.tokens += tokens
        elapsed = time.perf_counter() - start
        from oikyo.train.hardware import process_memory_mb

        metrics = {
            "loss": loss_sum / units,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else 0.0,
            "tokens": self.state.tokens,
            "memory_mb": process_memory_mb(self.runtime.device),
        }
        # Extra metrics are sums over the step's micro-batches: divided by the step's units, unless the
        # recipe reduces them itself (means over a subset, such as KTO's desirable examples only).
        reduce = getattr(recipe, "step_metrics", None)
        metrics.update(reduce(extras) if reduce else {key: value / units for key, value in extras.items()})
        return metrics

    def autocast(self):
        """bf16 autocast where the runtime chose bf16 (CUDA, or a CPU with bf16 instructions), else a no-op."""
        import torch

        if self.runtime.dtype == "bfloat16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _maybe_evaluate(self, recipe, metrics: dict) -> tuple[bool, bool]:
        """Evaluate when due (every eval_every steps and at the last step) into ``metrics``.

        Returns (stop early, new best validation loss).
        """
        state, train = self.state, self.config.train
        due = state.step == self.total_steps or (train.eval_every and state.step % train.eval_every == 0)
        result = self.evaluate(recipe) if due else None
        if result is None:
            return False, False
        metrics.update(result)
        loss = result["eval_loss"]
        new_best = state.best_eval_loss is None or loss < state.best_eval_loss
        if new_best:
            state.best_eval_loss = loss
        if state.patience_best is None or loss < state.patience_best - train.early_stopping_min_delta:
            state.patience_best, state.bad_evals = loss, 0
        else:
            state.bad_evals += 1
        patience = train.early_stopping_patience
        return patience is not None and state.bad_evals >= patience, new_best

    def evaluate(self, recipe) -> dict | None:
        """Run the recipe's evaluation in eval mode without gradients; remember the result."""
        import torch

        self.model.eval()
        with torch.no_grad(), self.autocast():
            # FSDP2: inside its root, which gathers the weights the evaluation uses
            result = self.fsdp(recipe.evaluate) if self.fsdp is not None else recipe.evaluate()
        self.model.train()
        if result is not None:
            self.state.last_eval_step, self.state.last_eval_loss = self.state.step, result["eval_loss"]
            self.log(f"step {self.state.step}: eval_loss {result['eval_loss']:.4f}")
        return result

    def _save(self) -> Path:
        from oikyo.train import distributed

        state = self.state
        eval_loss = state.last_eval_loss if state.last_eval_step == state.step else None
        record = {k: getattr(state, k) for k in LoopState.__dataclass_fields__}
        record.update(
            eval_loss=eval_loss,
            config_hash=self.hash,
            total_steps=self.total_steps,
            method=self.config.method.name,
            finetune=self.config.method.finetune,
        )
        if self.dist:
            write_weights = self._write_weights
            if self.fsdp is not None:  # the full weights, gathered from the shards by every rank onto rank 0
                full = distributed.gather_full(self.model)
                write_weights = lambda folder: self._write_weights(folder, full)  # noqa: E731
            path = distributed.save_checkpoint(self.checkpoints, state.step, dist=self.dist, model=self.model,
                                               optimizer=self.optimizer, write_weights=write_weights,
                                               scheduler=self.scheduler, state=record)
        else:
            path = ckpt.save_checkpoint(
                self.checkpoints,
                state.step,
                write_weights=self._write_weights,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=record,
            )
        self.last_saved_step = state.step
        if self.rank == 0:
            for removed in ckpt.prune(self.checkpoints, self.config.checkpoint.keep_best):
                self.log(f"Removed checkpoint {removed.name} (not among the best {self.config.checkpoint.keep_best})")
            self.log(f"Saved checkpoint {path.name}")
        if self.dist:
            distributed.barrier()  # the other ranks read the folder list only after rank 0 pruned it
        return path

    def _finish(self, status: str, recipe) -> TrainResult:
        state = self.state
        if self.last_saved_step != state.step:
            final = self._save()
        else:
            final = self.checkpoints / ckpt.checkpoint_name(state.step)
        best, best_loss = ckpt.best_checkpoint(self.checkpoints)
        output = self.ctx.run_dir / "output"
        if status != "cancelled" and self.rank == 0:
            source = best if (self.config.checkpoint.export == "best" and best is not None) else final
            self._export(source, output)
        if self.dist:
            from oikyo.train import distributed

            distributed.barrier()
        self.log(f"Run {status} after {state.step} steps, {state.tokens} tokens")
        return TrainResult(
            status=status,
            steps=state.step,
            tokens=state.tokens,
            final_checkpoint=final,
            best_checkpoint=best,
            best_eval_loss=best_loss if best_loss is not None else state.best_eval_loss,
            output_dir=output,
        )

    def _export(self, checkpoint: Path, output: Path) -> None:
        """Copy the checkpoint's weights plus the tokenizer to ``output`` (replaced atomically)."""
        tmp = output.with_name(f".{output.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for file in checkpoint.iterdir():
            if file.name not in _CHECKPOINT_ONLY:
                shutil.copy2(file, tmp / file.name)
        self.tokenizer.save_pretrained(tmp)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
        self.log(f"Exported {checkpoint.name} to {output}")


# ----------------------------------------------------------------------------- merging


def merge_adapter(base_model_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge a LoRA adapter into its base model; save a plain transformers model folder (safetensors).

    The tokenizer comes from ``adapter_dir`` when it holds one (an exported run output), else from
    the base model. The folder is written beside ``out_dir`` and renamed into place.
    """
    import torch
    from peft import PeftModel

    from oikyo.models.loading import load_model, load_tokenizer, require_safetensors

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json is missing)")
    require_safetensors(adapter_dir, "adapter")  # else peft would fall back to unpickling adapter_model.bin
    base = load_model(base_model_dir, dtype=torch.float32, device="cpu")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(adapter_dir if has_tokenizer else base_model_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
