"""Fixtures for the generation engine tests: a tiny model that writes varied text, LoRA adapters, prompts.

The shared tiny random model (std 0.02 weights) greedily repeats one token, which would let wrong
batching pass unnoticed. ``varied_model_dir`` re-draws its weights with std 0.3, so greedy outputs
are long runs of different tokens: any mix-up of rows, positions or adapters changes them.
Tests use one CPU thread: on the shared 2-core machine tiny matrix products are much slower with
two contending OpenMP threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUESTIONS = [
    "What is the capital of France?",
    "Hi",
    "Explain photosynthesis in one paragraph, with as much detail as you can manage.",
    "List three prime numbers.",
    "Write a haiku about the sea.",
]


@pytest.fixture(scope="session")
def serve_tokenizer_dir(bundled_tokenizer_dir) -> Path:
    """The bundled SmolLM2 tokenizer and chat template (the session's, from tests/conftest.py)."""
    return bundled_tokenizer_dir


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory, serve_tokenizer_dir) -> Path:
    """A tiny Llama (2 layers, hidden 32, real tokenizer) whose greedy outputs vary from token to token."""
    from serving_fixtures import random_model_dir

    return random_model_dir(tmp_path_factory.mktemp("serve-tiny") / "tiny", serve_tokenizer_dir, seed=0)


@pytest.fixture(scope="session")
def adapter_dirs(tmp_path_factory, varied_model_dir) -> dict[str, Path]:
    """Three LoRA adapters (r=4, all linear layers) on the varied model, with random, different weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from oikyo.models.loading import load_model

    root = tmp_path_factory.mktemp("serve-adapters")
    out = {}
    for i, name in enumerate(("alpha", "beta", "gamma")):
        model = load_model(varied_model_dir)
        config = LoraConfig(r=4, lora_alpha=8 * (i + 1), target_modules="all-linear", task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
        generator = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for pname, parameter in peft_model.named_parameters():
                if "lora_" in pname:  # lora_B starts at zero: perturb both so the adapter changes outputs
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        peft_model.save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def engine(varied_model_dir):
    """One engine on the varied model, shared by the tests that do not change its settings."""
    from oikyo.serve.engine.core import GenerationEngine

    return GenerationEngine(varied_model_dir, max_batch_size=4, num_threads=1)


@pytest.fixture(scope="session")
def prompts(engine) -> list[list[int]]:
    """Chat prompts of different lengths, encoded with THE chat template."""
    from oikyo.models.chat_template import encode_prompt

    return [encode_prompt(engine.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.fixture(scope="session")
def reference(varied_model_dir):
    """``reference(prompt_ids, max_new_tokens, adapter_dir=None)``: Hugging Face greedy generate, run alone."""
    import torch

    from oikyo.models.loading import load_model

    base = load_model(varied_model_dir)
    cache: dict = {}

    def run(prompt_ids, max_new_tokens, adapter_dir=None, stop_token_ids=None):
        key = (tuple(prompt_ids), max_new_tokens, str(adapter_dir), tuple(stop_token_ids or ()))
        if key not in cache:
            model = base
            if adapter_dir is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(load_model(varied_model_dir), adapter_dir).eval()
            kwargs = {"eos_token_id": list(stop_token_ids)} if stop_token_ids else {}
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False, **kwargs
                )
            cache[key] = out[0, len(prompt_ids) :].tolist()
        return cache[key]

    return run


@pytest.fixture
def set_threads():
    """``torch.set_num_threads``, with torch's thread count restored after the test."""
    import torch

    threads = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(threads)
