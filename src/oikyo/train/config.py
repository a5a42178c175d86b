"""The training config: typed groups (model, data, method, lora, train, dpo, kto, orpo, ...), YAML in and out.

A config is a YAML file, dotted overrides and quick keyword overrides, validated together::

    config = load_config("sft-lora.yaml", ["train.lr=1e-4", "lora.rank=8"], dataset="support")
    config_hash(config)        # sha256 of the canonical JSON: identical configs, identical hashes
    print(dump_yaml(config))   # the resolved config as YAML, every knob with its description

Every problem (bad values, unknown keys, malformed overrides, cross-field conflicts) is collected
and raised once as :class:`ConfigError`, one line per problem with the dotted field path.

``auto`` fields (device, dtype, num_threads) stay ``auto`` in the config, so one file is portable;
:func:`resolve_runtime` turns them into concrete values on the machine that trains. Checks that
depend on the hardware (QLoRA needs CUDA and bitsandbytes; bf16 needs a device that runs it
natively) run at validation time, so they fail before a job is queued on the same machine.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from oikyo.data.replay import PARENT as MIX_PARENT  # data.mix_dataset: the parent model version's training data
from oikyo.errors import OikyoError

_PROBLEMS = "oikyo_config_problems"  # pydantic error type carrying several "path: message" lines


class ConfigError(OikyoError):
    """The training config has problems; ``problems`` lists them, one "dotted.path: message" each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"Invalid training config ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelSettings(_Group):
    """The base model to fine-tune."""

    name: str = Field(
        "smollm2-135m-instruct",
        description="Catalog name or local folder of the base model (default: the bundled SmolLM2-135M-Instruct), "
        "or a model version id (mv-...) to go on from a model trained here (see model.start for adapter versions).",
    )
    start: Literal["merge", "continue"] = Field(
        "merge",
        description="How a run starts from an adapter model version in model.name. merge: the adapter is merged "
        "into its base once and a new adapter (or full model) is trained on the merged model. continue: the "
        "version's adapter itself is trained further on its base model (lora/qlora; sft, orpo and pretrain; "
        "lora.rank, lora.alpha and lora.target_modules must match the adapter's). The result is an adapter on "
        "the original base, so one server can serve parent and child adapters side by side.",
    )


class DataSettings(_Group):
    """Which dataset version to read and how its rows become token batches."""

    dataset: str | None = Field(
        None, description="Dataset version to train on: an id, a name (latest version) or name@id."
    )
    train_split: str | None = Field(
        "train", description="Split of the version used for training (null: every row, when the version is not split)."
    )
    eval_split: str | None = Field(
        "validation", description="Split used for validation loss, early stopping and best checkpoints (null: none)."
    )
    max_eval_rows: int | None = Field(
        256, ge=1, description="Evaluate on at most this many validation rows (the first ones), to bound eval time."
    )
    max_length: int = Field(
        1024,
        ge=8,
        description="Longest example in tokens. Longer examples stop the run with an error naming the row "
        "(never silently truncated); method pretrain cuts longer documents into pieces of this length instead.",
    )
    packing: bool = Field(
        False,
        description="sft and pretrain only (on by default for pretrain): concatenate examples into max_length "
        "blocks (positions restart per example, attention stays within each example). Off: batches of similar "
        "length, padded to the longest.",
    )
    train_on: Literal["assistant", "last", "all"] = Field(
        "assistant",
        description="Tokens that count in the loss: every assistant reply, only the last reply, or all tokens "
        "(sft; pretrain trains on every token, dpo/orpo/kto on the judged reply).",
    )
    mix: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of each training batch drawn from general conversational replay data, to keep the "
        "model's general abilities (sft only). Replay rows come on top of the train.batch_size task rows, so "
        "steps per epoch do not change (e.g. 0.2 at batch size 8: 2 replay rows per batch); 0 turns it off.",
    )
    mix_dataset: str | None = Field(
        None,
        description="Dataset version (id or name) of conversations to replay when data.mix > 0; null: oikyo's "
        "shipped general set (answers of the bundled base model to general prompts); parent: the training split "
        "of the dataset version that trained the model version in model.name (from its lineage), so a model "
        "trained further on new data keeps rehearsing what it learnt before.",
    )


class MethodSettings(_Group):
    """The training objective and which weights it updates."""

    name: Literal["sft", "dpo", "grpo", "kto", "orpo", "pretrain"] = Field(
        "sft", description="sft: supervised fine-tuning on conversations or text; dpo: preference pairs; "
        "grpo: group relative policy optimisation with reward functions on conversation prompts; "
        "kto: conversations labelled desirable or not (unpaired preferences); orpo: preference pairs, "
        "reference-free, in one stage; pretrain: continued pretraining on plain text (every token)."
    )
    finetune: Literal["lora", "full", "qlora"] = Field(
        "lora",
        description="lora: small adapters on a frozen base; full: every weight; qlora: LoRA on a 4-bit base "
        "(CUDA with bitsandbytes only).",
    )


def _check_target_modules(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return value
    raise ValueError("must be 'all-linear' or a non-empty list of module names, e.g. [q_proj, v_proj]")


class LoraSettings(_Group):
    """LoRA adapter shape (used by finetune lora and qlora)."""

    rank: int = Field(16, ge=1, le=4096, description="Rank r of the low-rank update matrices.")
    alpha: float = Field(32, gt=0, description="Scaling numerator: the update is scaled by alpha / rank.")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapter's input during training. 0 (default) lets the adapters reuse the "
        "layer input: less memory and ~1.5x faster on a CPU; 0.05-0.1 can help on small datasets.",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules that get adapters: 'all-linear' (every linear layer except the output head) "
        "or a list of names such as [q_proj, v_proj].",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        return _check_target_modules(value)


def _check_threads(value: Any) -> Any:
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError("must be 'auto' (the physical cores) or a positive integer")


class TrainSettings(_Group):
    """Optimizer, schedule, batching, evaluation and hardware settings."""

    lr: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of AdamW (2e-4 suits LoRA; ~2e-5 full).")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warmup: cosine or linear to zero, or constant."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Warmup length in optimizer steps; when set it overrides warmup_ratio."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Warmup length as a fraction of all optimizer steps.")
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training rows (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(8, ge=1, description="Examples (or packed blocks) per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes accumulated into one optimizer step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay on matrices (not norms/biases).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the total gradient norm to this (null: no clipping).")
    seed: int = Field(0, ge=0, description="Seed for adapter initialisation, dropout and the data order.")
    group_by_length: bool = Field(
        True,
        description="Batch examples of similar length together (within the seeded order) to avoid padding waste.",
    )
    loss_on_reasoning: bool = Field(
        True,
        description="Learn the reasoning traces of assistant turns (message field reasoning). false: the model "
        "reads them but only the answers after them count in the loss.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30% slower. Off for small models."
    )
    eval_every: int | None = Field(
        50, ge=1, description="Evaluate the validation loss every this many optimizer steps (and always at the end)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement (null: never stop early)."
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="An evaluation improves only when the loss falls by more than this."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to train: auto picks CUDA, then Apple MPS, then the CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Compute precision: auto is bf16 (autocast, float32 adapters and master weights) where the "
        "device runs it natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX, unless OIKYO_CPU_BF16=off), "
        "float32 elsewhere (other CPUs emulate bf16 ~15x slower).",
    )
    num_threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads for PyTorch: auto uses the physical cores (hyper-threads only contend)."
    )
    nproc: int = Field(
        1, ge=1, le=64,
        description="Training processes on this machine (one per GPU, or CPU processes with gloo): above 1 the "
        "worker launches the run with torchrun and trains with DDP (lora) or FSDP2 (full); train.batch_size stays "
        "the global batch, split between the processes (every method; grpo with lora only). Not part of the config "
        "hash.",
    )
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Also send the live metrics to these trackers where installed: tensorboard (event files in "
        "the run folder), mlflow (its tracking URI from MLFLOW_TRACKING_URI), wandb (set WANDB_MODE=offline to "
        "stay offline). A tracker that is missing or fails is skipped with a log line; the run goes on.",
    )

    @field_validator("num_threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return _check_threads(value)

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return []
        return [value] if isinstance(value, str) else value


class DpoSettings(_Group):
    """Direct preference optimisation (method dpo)."""

    beta: float = Field(
        0.1, gt=0, description="Strength of the pull toward the reference model (higher: stay closer to it)."
    )


class RewardSpec(_Group):
    """One reward function of a GRPO run and its weight in the summed reward."""

    name: str = Field(
        ..., min_length=1, description="A registered reward: a built-in (exact_match, json_valid, json_field_match, "
        "regex_match, length_penalty) or one from grpo.reward_modules."
    )
    weight: float = Field(1.0, description="Weight of this reward in the summed reward of a completion.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the reward (regex_match: pattern; length_penalty: target)."
    )


class GrpoSettings(_Group):
    """Group relative policy optimisation (method grpo): sampling, rewards and the KL pull."""

    num_generations: int = Field(
        8, ge=2, le=256, description="Completions sampled per prompt (the group G whose rewards are compared)."
    )
    max_new_tokens: int = Field(128, ge=1, description="Longest completion in tokens (generation stops there).")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature of the completions.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest token set of this mass.")
    beta: float = Field(
        0.0, ge=0, description="Weight of the KL penalty to the starting model (the adapter switched off). 0 "
        "(default, as in DAPO and Dr. GRPO) skips the reference pass: faster, and with few steps the policy "
        "stays close anyway."
    )
    rewards: list[RewardSpec] = Field(
        default_factory=list, description="The reward functions, summed with their weights: a list of "
        "{name, weight, args}."
    )
    reward_modules: list[str] = Field(
        default_factory=list, description="Python modules to import first: they register user rewards with "
        "@oikyo.train.rewards.reward."
    )

    @field_validator("rewards", mode="before")
    @classmethod
    def _rewards(cls, value: Any) -> Any:
        return _parse_rewards(value)

    @field_validator("reward_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value


def _parse_rewards(value: Any) -> Any:
    """grpo.rewards from the forms people write: a list of mappings, YAML flow text (the dashboard's input),
    or reward names alone ("json_valid, json_field_match": weight 1, no args)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise ValueError(f"not valid YAML ({str(error).splitlines()[0]})") from None
        else:
            value = [name.strip() for name in text.split(",") if name.strip()]
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class KtoSettings(_Group):
    """Kahneman-Tversky optimisation on unpaired preferences (method kto)."""

    beta: float = Field(
        0.1, gt=0, description="Strength of the pull toward the reference model (higher: stay closer to it)."
    )
    desirable_weight: float = Field(
        1.0, gt=0, description="Loss weight of the desirable answers (raise it when they are the fewer)."
    )
    undesirable_weight: float = Field(
        1.0,
        gt=0,
        description="Loss weight of the undesirable answers. The paper advises desirable_weight x desirable "
        "rows / (undesirable_weight x undesirable rows) between 1 and 4/3; the run logs that ratio.",
    )


class OrpoSettings(_Group):
    """Odds-ratio preference optimisation (method orpo): SFT on the chosen reply plus an odds-ratio term."""

    beta: float = Field(
        0.1,
        gt=0,
        description="Weight of the odds-ratio term against the SFT loss on the chosen reply (lambda in the "
        "ORPO paper, beta in TRL).",
    )


class CheckpointSettings(_Group):
    """When checkpoints are written and which are kept."""

    save_every: int | None = Field(
        100, ge=1, description="Save a checkpoint every this many optimizer steps (always at the end and on cancel)."
    )
    keep_best: int = Field(
        2, ge=0, description="Keep the k checkpoints with the lowest validation loss, plus the newest one."
    )
    export: Literal["last", "best"] = Field(
        "last", description="Weights written to output/: the final step's, or the best validation checkpoint's."
    )


class TrainConfig(_Group):
    """A complete fine-tuning run: base model, data, method and every training knob."""

    model: ModelSettings = Field(default_factory=ModelSettings, description=ModelSettings.__doc__)
    data: DataSettings = Field(default_factory=DataSettings, description=DataSettings.__doc__)
    method: MethodSettings = Field(default_factory=MethodSettings, description=MethodSettings.__doc__)
    lora: LoraSettings = Field(default_factory=LoraSettings, description=LoraSettings.__doc__)
    train: TrainSettings = Field(default_factory=TrainSettings, description=TrainSettings.__doc__)
    dpo: DpoSettings = Field(default_factory=DpoSettings, description=DpoSettings.__doc__)
    grpo: GrpoSettings = Field(default_factory=GrpoSettings, description=GrpoSettings.__doc__)
    kto: KtoSettings = Field(default_factory=KtoSettings, description=KtoSettings.__doc__)
    orpo: OrpoSettings = Field(default_factory=OrpoSettings, description=OrpoSettings.__doc__)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings, description=CheckpointSettings.__doc__)

    @model_validator(mode="after")
    def _cross_field(self) -> TrainConfig:
        if self.method.name == "pretrain" and "packing" not in self.data.model_fields_set:
            self.data.packing = True  # pretrain packs unless the config says otherwise
        problems = cross_field_problems(self)
        if problems:
            raise PydanticCustomError(_PROBLEMS, "{problems}", {"problems": "\n".join(problems)})
        return self


def cross_field_problems(config: TrainConfig) -> list[str]:
    """Conflicts between fields and with this machine's hardware, as "dotted.path: message" lines."""
    from oikyo.train import hardware

    problems = []
    train, method = config.train, config.method
    if config.data.packing and method.name in ("dpo", "kto", "orpo"):
        problems.append(f"data.packing: packing applies to sft and pretrain only; turn it off for {method.name}")
    if method.name == "grpo":
        if config.data.packing:
            problems.append("data.packing: packing applies to sft only; turn it off for grpo")
        if not config.grpo.rewards:
            problems.append("grpo.rewards: grpo needs at least one reward, e.g. [{name: json_valid}]")
    if config.data.mix > 0 and method.name != "sft":
        problems.append(
            f"data.mix: replay mixing is supported by method sft only; set data.mix=0 for {method.name}"
        )
    problems += _start_problems(config)
    problems += _nproc_problems(config)
    if train.early_stopping_patience is not None and (train.eval_every is None or config.data.eval_split is None):
        problems.append("train.early_stopping_patience: early stopping needs train.eval_every and data.eval_split")

    try:  # read when the run starts: a wrong value is refused now, before anything is queued
        hardware.cpu_bf16_setting()
    except OikyoError as error:
        problems.append(str(error))
    if train.device in ("auto", "cpu") and train.dtype != "bfloat16" and method.finetune != "qlora":
        return problems  # nothing below depends on the hardware (and torch stays unimported)
    hw = hardware.detect()
    if train.device == "cuda" and not hw.cuda:
        problems.append("train.device: cuda was requested but no CUDA device is available")
    if train.device == "mps" and not hw.mps:
        problems.append("train.device: mps was requested but Apple MPS is not available")
    device = hw.device if train.device == "auto" else train.device
    if train.dtype == "bfloat16" and not hardware.device_supports_bf16(device):
        problems.append(
            f"train.dtype: bfloat16 needs a device that runs it natively (a CUDA GPU with bf16, or a CPU with "
            f"AVX512-BF16 or AMX-BF16 instructions{' while OIKYO_CPU_BF16 is not off' if device == 'cpu' else ''}); "
            f"{device} would emulate it ~15x slower. Use auto or float32"
        )
    if method.finetune == "qlora":
        if device != "cuda" or not hw.cuda:
            problems.append("method.finetune: qlora needs a CUDA GPU; use lora (same quality, more memory) here")
        elif not hw.bitsandbytes:
            problems.append("method.finetune: qlora needs the bitsandbytes package: pip install bitsandbytes")
    return problems


CONTINUE_METHODS = ("sft", "orpo", "pretrain")  # no reference model (dpo, kto, grpo: the base with the adapter off)


def _start_problems(config: TrainConfig) -> list[str]:
    """model.start=continue and data.mix_dataset=parent need a model version; what the config alone can tell."""
    problems = []
    model, method = config.model, config.method
    from_version = model.name.startswith("mv-")
    if model.start == "continue":
        if not from_version:
            problems.append(f"model.start: continue trains a model version's adapter further, so model.name must be "
                            f"an adapter model version (mv-...), not {model.name!r}; use model.start=merge")
        if method.finetune == "full":
            problems.append("model.start: continue trains the adapter further, so method.finetune must be lora or "
                            "qlora (not full); use model.start=merge to fine-tune every weight of the merged model")
        if method.name not in CONTINUE_METHODS:
            # With LoRA these methods take the model with its adapter switched off as the reference: that
            # would be the original base, not the parent adapter the run starts from.
            problems.append(f"model.start: continue supports method {', '.join(CONTINUE_METHODS)}; {method.name}'s "
                            "reference model would be the base without the parent adapter. Use model.start=merge")
    if config.data.mix_dataset == MIX_PARENT:
        if not from_version:
            problems.append(f"data.mix_dataset: parent replays the data that trained the model version in "
                            f"model.name, but {model.name!r} is not a model version (mv-...)")
        if config.data.mix == 0:
            problems.append("data.mix: data.mix_dataset=parent replays at the share data.mix; set it above 0 "
                            "(e.g. data.mix=0.2)")
    return problems


@dataclass(frozen=True)
class Runtime:
    """Concrete hardware settings for one run (the config's ``auto`` values resolved on this machine)."""

    device: str  # "cpu" | "cuda" | "mps"
    dtype: str  # "float32" | "bfloat16"
    num_threads: int


def resolve_runtime(config: TrainConfig) -> Runtime:
    """Resolve device, dtype and num_threads for this machine."""
    from oikyo.train import hardware

    hw = hardware.detect()
    train = config.train
    device = hw.device if train.device == "auto" else train.device
    if train.dtype == "auto":
        dtype = "bfloat16" if hardware.device_supports_bf16(device) else "float32"
    else:
        dtype = train.dtype
    threads = hw.physical_cores if train.num_threads == "auto" else int(train.num_threads)
    return Runtime(device=device, dtype=dtype, num_threads=threads)


# ----------------------------------------------------------------------------- loading

# Quick keyword overrides (CLI options such as --dataset, --model) and the field each one sets.
QUICK_KEYS = {
    "dataset": "data.dataset",
    "model": "model.name",
    "method": "method.name",
    "finetune": "method.finetune",
    "lr": "train.lr",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "batch_size": "train.batch_size",
    "max_length": "data.max_length",
    "packing": "data.packing",
    "seed": "train.seed",
    "device": "train.device",
    "dtype": "train.dtype",
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **quick) -> TrainConfig:
    """Build a :class:`TrainConfig` from a YAML file (optional), dotted overrides and quick overrides.

    ``overrides`` are "dotted.path=value" strings, the value parsed as a YAML scalar or list
    ("train.lr=1e-4", "lora.target_modules=[q_proj, v_proj]", "data.eval_split=null").
    ``quick`` keywords are :data:`QUICK_KEYS` or any unique field name (``rank=8``); None values
    are ignored, so a CLI can pass every option through. Raises :class:`ConfigError` listing
    every problem.
    """
    problems: list[str] = []
    raw = _read_yaml(path, problems)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{item}: an override must look like dotted.path=value (e.g. train.lr=1e-4)")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        _set_path(raw, key.strip(), parsed, problems)
    for name, value in quick.items():
        if value is None:
            continue
        dotted = QUICK_KEYS.get(name) or _unique_field(name)
        if dotted is None:
            problems.append(f"{name}: unknown quick setting (known: {', '.join(sorted(QUICK_KEYS))})")
            continue
        _set_path(raw, dotted, value, problems)
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as error:
        problems.extend(format_validation_error(error))
        config = None
    if problems:
        raise ConfigError(problems)
    return config


def _read_yaml(path: str | Path | None, problems: list[str]) -> dict:
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        problems.append(f"{file}: config file not found")
        return {}
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        problems.append(f"{file}: not valid YAML ({error})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{file}: the top level must be a mapping of groups (model, data, train, ...)")
        return {}
    return data


def _set_path(raw: dict, dotted: str, value: Any, problems: list[str]) -> None:
    """Set ``raw[a][b]... = value`` for "a.b..."; a non-mapping in the way is a problem."""
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append(f"{'.'.join(parts[: i + 1])}: is a value, not a group, so {dotted} cannot be set")
            return
        node = child
    node[parts[-1]] = value


def _unique_field(name: str) -> str | None:
    """The dotted path of the only group field called ``name``, or None."""
    matches = [
        f"{group}.{name}"
        for group, info in TrainConfig.model_fields.items()
        if name in info.annotation.model_fields  # type: ignore[union-attr]
    ]
    return matches[0] if len(matches) == 1 else None


def _all_paths() -> list[str]:
    return [
        f"{group}.{field}"
        for group, info in TrainConfig.model_fields.items()
        for field in info.annotation.model_fields  # type: ignore[union-attr]
    ] + list(TrainConfig.model_fields)


def format_validation_error(error: ValidationError) -> list[str]:
    """One readable "dotted.path: message" line per problem in a pydantic ValidationError."""
    lines = []
    for err in error.errors():
        path = ".".join(str(part) for part in err["loc"])
        if err["type"] == _PROBLEMS:
            prefix = f"{path}." if path else ""
            lines.extend(prefix + line for line in err["ctx"]["problems"].split("\n"))
            continue
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(path, _all_paths(), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"{path}: unknown setting{hint}")
            continue
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] != "missing" and not isinstance(value, (dict, list)):
            message += f" (got {value!r})"
        lines.append(f"{path}: {message}")
    return lines


def _nproc_problems(config: TrainConfig) -> list[str]:
    """What multi-process training (train.nproc > 1) does not support yet."""
    if config.train.nproc == 1:
        return []
    problems = []
    if config.method.name == "grpo" and config.method.finetune == "full":
        problems.append("train.nproc: grpo runs in several processes with method.finetune lora only for now (its "
                        "generation engine needs the whole weights, which FSDP2 shards); set train.nproc=1 or "
                        "method.finetune=lora")
    if config.method.finetune not in ("lora", "full"):
        problems.append(f"train.nproc: multi-process training supports method.finetune lora (DDP) and full (FSDP2) "
                        f"only for now; set train.nproc=1 for {config.method.finetune}")
    if config.data.mix > 0 and config.data.mix_dataset == MIX_PARENT:
        problems.append("train.nproc: replaying the parent model version's data (data.mix_dataset=parent) runs in one "
                        "process only for now; name that dataset version in data.mix_dataset, or set train.nproc=1")
    if config.train.device == "mps":
        problems.append("train.nproc: Apple MPS trains in one process; set train.nproc=1")
    return problems


def config_hash(config: TrainConfig) -> str:
    """sha256 of the canonical JSON of the config (sorted keys, no spaces).

    ``train.nproc`` is left out: how many processes train a run is a runtime choice that gives the same
    result (a run saved at 2 processes resumes at 1 without a "config changed" warning).
    """
    data = config.model_dump(mode="json")
    data["train"].pop("nproc", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump_yaml(config: TrainConfig, header: str | None = None) -> str:
    """The config as YAML with every group and field preceded by its description as a comment.

    ``header`` (optional) opens the file as comment lines. ``load_config`` reads the result back
    to an equal config.
    """
    lines: list[str] = []
    if header:
        lines.extend(f"# {line}".rstrip() for line in header.strip().splitlines())
        lines.append("")
    for group, info in TrainConfig.model_fields.items():
        lines.extend(_comment(info.description or "", indent=""))
        lines.append(f"{group}:")
        settings = getattr(config, group)
        for name, field_info in type(settings).model_fields.items():
            lines.extend(_comment(field_info.description or "", indent="  "))
            lines.append(f"  {name}: {_yaml_value(getattr(settings, name))}")
        lines.append("")
    return "\n".join(lines)


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=100 - len(indent) - 2)]


def _yaml_value(value: Any) -> str:
    """A value as a one-line YAML flow scalar or list."""
    if isinstance(value, list):  # lists of typed items (grpo.rewards) as plain mappings
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    if isinstance(value, float):
        text = repr(value)  # PyYAML (YAML 1.1) reads "1e-05" as a string: write "1.0e-05"
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
