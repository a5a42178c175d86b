"""oikyo.train: fine-tuning recipes (SFT, DPO) with LoRA / full / QLoRA, checkpoints and exact resume.

The service API (what the job system calls)::

    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training, merge_adapter

    config = load_config("sft-lora.yaml", ["train.lr=1e-4"], dataset="support")
    result = run_training(config, run_dir=..., model_dir=..., train_rows=..., eval_rows=...,
                          on_metrics=..., should_stop=..., log=print)

Heavy libraries (torch, transformers, peft) are imported by the modules that use them, never here.
"""

from __future__ import annotations

from oikyo.errors import OikyoError


class TrainingError(OikyoError):
    """A training run cannot go on for a reason the user can fix (data too long, out of memory, ...)."""


class ProcessLost(TrainingError):
    """A process of a multi-process run died without an error of its own (killed, a lost node): nothing
    about the run is wrong, so the job system puts it back in the queue to resume from its last checkpoint."""


__all__ = ["ProcessLost", "TrainingError"]
