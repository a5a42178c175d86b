"""Loading model folders, describing them without loading weights, and tiny test models."""

from __future__ import annotations

import json

import pytest

from oikyo.models import loading


def test_tiny_model_runs_a_forward_pass(tiny_model_dir):
    import torch

    from oikyo.models.chat_template import encode_conversation

    tokenizer = loading.load_tokenizer(tiny_model_dir)
    model = loading.load_model(tiny_model_dir)
    assert not model.training
    enc = encode_conversation(
        tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    )
    ids = torch.tensor([enc.input_ids])  # (1, seq)
    out = model(input_ids=ids, labels=torch.tensor([enc.labels]))
    assert out.logits.shape == (1, len(enc.input_ids), len(tokenizer))  # (batch, seq, vocab)
    assert out.logits.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_tiny_model_is_reproducible(tmp_path, bundled_tokenizer_dir):
    from safetensors.torch import load_file

    a = loading.tiny_model_dir(tmp_path / "a", bundled_tokenizer_dir, seed=3)
    b = loading.tiny_model_dir(tmp_path / "b", bundled_tokenizer_dir, seed=3)
    c = loading.tiny_model_dir(tmp_path / "c", bundled_tokenizer_dir, seed=4)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (wa[name] == wb[name]).all()
    assert not (wa[name] == wc[name]).all()


def test_model_info_of_tiny_model_matches_the_loaded_model(tiny_model_dir):
    info = loading.model_info(tiny_model_dir)
    model = loading.load_model(tiny_model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["context_length"] == 2048 == loading.context_length(tiny_model_dir)
    assert info["layers"] == 2 and info["hidden_size"] == 32
    assert info["has_chat_template"] is True
    assert info["license"] is None


def test_model_info_without_safetensors_counts_from_the_config(tmp_path, tiny_model_dir):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A model\n")
    info = loading.model_info(folder)
    assert info["parameters"] == loading.model_info(tiny_model_dir)["parameters"]
    assert info["license"] == "mit"
    assert info["has_chat_template"] is False


def test_context_length_falls_back_through_config_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"n_positions": 1024}))
    assert loading.context_length(tmp_path) == 1024
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert loading.context_length(tmp_path) == 4096
    (tmp_path / "config.json").write_text("{}")
    assert loading.context_length(tmp_path) == loading.DEFAULT_CONTEXT_LENGTH


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        loading.load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        loading.model_info(tmp_path)


@pytest.mark.slow
def test_bundled_model_info(bundled_model_dir):
    info = loading.model_info(bundled_model_dir)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == 134_515_008  # as counted on the GGUF-loaded model
    assert info["context_length"] == 8192
    assert info["has_chat_template"] is True
    assert info["license"] == "apache-2.0"
