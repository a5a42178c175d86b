"""Helpers shared by the evaluation tests (tests/evaluate and tests/cli/test_eval_cli.py); not a test module.

A tiny model with a hand-made LoRA adapter, small split datasets.

The adapter's weights are random (peft ``init_lora_weights=False``), so the "fine-tuned" model
answers differently from its base: enough to exercise every path without training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A random LoRA adapter (r=4 on q_proj and v_proj) for the tiny model."""
    from peft import LoraConfig, get_peft_model

    from oikyo.models.loading import load_model

    model = load_model(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    out = tmp_path_factory.mktemp("tiny-adapter") / "adapter"
    peft_model.save_pretrained(out)
    return out


def write_json_rows(path: Path, n: int = 30) -> Path:
    """Conversations whose answers are JSON objects (colour and size of an item)."""
    colours, sizes = ("red", "green", "blue"), ("small", "large")
    rows = [{"messages": [{"role": "system", "content": "Reply with JSON."},
                          {"role": "user", "content": f"Describe item {i}."},
                          {"role": "assistant", "content": json.dumps({"colour": colours[i % 3], "size": sizes[i % 2]})}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_json_dataset(tmp_path: Path, name: str = "items", n: int = 30):
    """A split dataset version with JSON answers (train / validation / test)."""
    from oikyo.data import split, versions

    versions.import_dataset(write_json_rows(tmp_path / f"{name}.jsonl", n), name=name)
    version, _ = split.split_dataset(name, validation=0.2, test=0.2, seed=0)
    return version


def register_adapter(adapter_dir: Path, base_model: Path, dataset, *, config: dict | None = None,
                     mv_id: str = "mv-0000aaaa"):
    """Record a model version for a hand-made adapter trained (so its lineage says) on ``dataset``'s train split."""
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    config = config or {"data": {"dataset": dataset.id, "train_split": "train"}, "train": {"lr": 0.0002}}
    record = ModelVersion(id=mv_id, run_id=None, base_model=str(base_model), kind="adapter", path=str(adapter_dir),
                          lineage={"dataset_version": dataset.id, "dataset_hash": dataset.content_hash,
                                   "config": config}, created_at=utcnow())
    with db.session() as s:
        s.add(record)
    return record


@pytest.fixture
def json_dataset(tmp_path):
    return make_json_dataset(tmp_path)


@pytest.fixture
def adapter_version(tiny_adapter_dir, tiny_model_dir, json_dataset):
    return register_adapter(tiny_adapter_dir, tiny_model_dir, json_dataset)
