"""The base-model catalog: sources, refusals, descriptions and the fit/time estimate."""

from __future__ import annotations

import json
import pickle
import shutil
import time

import pytest

from oikyo.models import catalog
from oikyo.models.estimate import estimate


def test_bundled_model_is_always_listed():
    [first] = catalog.list_models()
    assert first["name"] == catalog.BUNDLED_NAME and first["source"] == "bundled" and not first["ready"]


def test_add_local_folder_then_resolve_and_describe(tiny_model_dir):
    info = catalog.add_model(str(tiny_model_dir), name="tiny")
    assert info["architecture"] == "LlamaForCausalLM" and info["parameters"] > 0
    assert info["context_length"] == 2048 and info["has_chat_template"] and not info["trust_remote_code"]
    assert catalog.resolve_model_dir("tiny") == tiny_model_dir.resolve()
    assert [m["name"] for m in catalog.list_models()] == [catalog.BUNDLED_NAME, "tiny"]
    with pytest.raises(catalog.ModelError, match="already in the catalog"):
        catalog.add_model(str(tiny_model_dir), name="tiny")
    catalog.add_model(str(tiny_model_dir), name="tiny-remote", trust_remote_code=True)
    assert catalog.trust_remote_code("tiny-remote") and not catalog.trust_remote_code("tiny")


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(catalog.ModelError, match="safetensors only"):
        catalog.add_model(str(folder))
    assert len(catalog.list_models()) == 1


def test_hub_id_offline_fails_at_once_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(catalog.ModelError, match="offline"):
        catalog.add_model("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert time.perf_counter() - start < 2


def test_unknown_model_is_a_clear_error():
    with pytest.raises(catalog.ModelError, match="unknown model 'nope'"):
        catalog.resolve_model_dir("nope")
    with pytest.raises(catalog.ModelError, match="not a model folder, a .gguf file or a Hub id"):
        catalog.add_model("./does-not-exist")


def test_token_counter_is_picklable_and_knows_the_context(tiny_model_dir):
    catalog.add_model(str(tiny_model_dir), name="tiny")
    counter = pickle.loads(pickle.dumps(catalog.token_counter("tiny")))
    assert counter.context_length == 2048
    row = {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]}
    assert counter(row) > counter.text("hello there") > 0


def test_estimate_grows_with_the_method_and_batch():
    info = {"parameters": 134_515_008, "hidden_size": 576, "intermediate_size": 1536, "kv_dim": 192,
            "layers": 30, "vocab_size": 49152}
    cpu = {"device": "cpu", "memory_bytes": 24 * 2**30, "bf16": False}
    lora = estimate(info, method="lora", hardware=cpu, measure=False)
    full = estimate(info, method="full", hardware=cpu, measure=False)
    big = estimate(info, method="lora", batch_size=64, max_length=4096, hardware=cpu, measure=False)
    assert lora["dtype"] == "float32"  # never bf16 on a CPU without native support
    assert 0 < lora["trainable_parameters"] < 0.1 * full["trainable_parameters"]
    assert full["memory_bytes"]["total"] > lora["memory_bytes"]["total"]
    assert lora["fits"] and not big["fits"]
    timed = estimate(info, method="lora", tokens=100_000, hardware=cpu)
    assert timed["seconds"] > 0 and timed["tokens_per_second"] > 0


def test_models_cli_show_json(tiny_model_dir):
    from typer.testing import CliRunner

    from oikyo.cli.main import app

    catalog.add_model(str(tiny_model_dir), name="tiny")
    result = CliRunner().invoke(app, ["models", "show", "tiny", "--json", "--tokens", "1000"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["model"]["name"] == "tiny" and shown["estimate"]["memory_bytes"]["total"] > 0


@pytest.mark.slow
def test_bundled_model_resolves_to_the_converted_folder(bundled_in_workspace):
    assert catalog.resolve_model_dir(catalog.BUNDLED_NAME) == bundled_in_workspace
    assert catalog.describe(catalog.BUNDLED_NAME)["parameters"] == 134_515_008
