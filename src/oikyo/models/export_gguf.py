"""GGUF files and Ollama folders from Hugging Face model folders, made by llama.cpp's own tools.

Nothing here converts or quantizes weights itself. llama.cpp's ``convert_hf_to_gguf.py`` writes
f32, f16, bf16 and q8_0 files (and the tokenizer, with ``tokenizer.chat_template``, as metadata);
``convert_lora_to_gguf.py`` writes a LoRA adapter for llama.cpp's ``--lora``; q4_k_m is llama.cpp's
``llama_model_quantize`` applied to the f16 file. All of them run in llama.cpp's own environment
(``.venv-llamacpp``, made once per machine by ``scripts/install-llamacpp.sh``, which copies the
converters from the same llama.cpp source the library is built from into
``.venv-llamacpp/share/llama.cpp``), through :mod:`oikyo.models.llamacpp_tool` where the library
is needed. That environment is found at ``--llamacpp-python`` / ``OIKYO_LLAMACPP_PYTHON``, else
``.venv-llamacpp`` in the current folder or in oikyo's checkout.

Usage::

    from oikyo.models import export_gguf
    tools = export_gguf.toolchain()                          # OikyoError with the install command if missing
    export_gguf.convert(model_dir, Path("m-q4_k_m.gguf"), "q4_k_m", tools)
    export_gguf.write_ollama(model_dir, Path("out/"), "q8_0", tools)   # out/<name>.gguf + out/Modelfile
    tools.greedy(Path("m.gguf"), [[1, 2, 3]], max_tokens=16, stop=[2])  # llama.cpp's greedy tokens

:mod:`oikyo.jobs.exports` applies these to model versions and records each export in the lineage.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oikyo.errors import OikyoError

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_k_m")
LORA_QUANTS = ("f32", "f16", "bf16", "q8_0")  # what convert_lora_to_gguf.py writes
WRITTEN_BY_CONVERTER = {"f32", "f16", "bf16", "q8_0"}  # q4_k_m: llama_model_quantize on the f16 file
PYTHON_ENV = "OIKYO_LLAMACPP_PYTHON"
ENV_DIR = ".venv-llamacpp"
INSTALL_HINT = ("llama.cpp is not installed: run `bash scripts/install-llamacpp.sh` in oikyo's checkout "
                f"(or point --llamacpp-python / {PYTHON_ENV} at the Python of an environment it made)")
TOOL = Path(__file__).with_name("llamacpp_tool.py")
# ChatML (`<|im_start|>role ... <|im_end|>`, SmolLM2, Qwen) in Ollama's Go template syntax. Ollama
# passes the request's (or the Modelfile's SYSTEM) system prompt as .System and every message in
# .Messages, so system messages are skipped in the loop.
CHATML_MARK = "<|im_start|>"
CHATML_OLLAMA = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
    '{{ end }}{{- end }}<|im_start|>assistant\n'
)
CHATML_STOPS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class Toolchain:
    """llama.cpp's environment: its Python and the folder holding its converters."""

    python: Path
    share: Path

    def run(self, args: list[str], *, what: str, stdin: str | None = None) -> str:
        """Run ``python args...`` offline; an OikyoError with the tail of its output when it fails."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run([str(self.python), *args], input=stdin, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
            raise OikyoError(f"{what} failed (exit {done.returncode}):\n{tail}")
        return done.stdout

    def version(self) -> str:
        """The llama-cpp-python release (it names the vendored llama.cpp commit)."""
        return self.run([str(TOOL), "version"], what="llama.cpp").strip()

    def greedy(self, model: Path, prompts: list[list[int]], *, max_tokens: int, stop: list[int]) -> list[list[int]]:
        """llama.cpp's greedy continuation of each token-id prompt, each ending at a stop id or ``max_tokens``."""
        request = json.dumps({"prompts": prompts, "max_tokens": max_tokens, "stop": stop})
        found = self.run([str(TOOL), "greedy", str(model)], stdin=request, what=f"llama.cpp decoding {model.name}")
        return json.loads(found.strip().splitlines()[-1])["tokens"]


def toolchain(python: str | Path | None = None) -> Toolchain:
    """llama.cpp's environment at ``python``, ``OIKYO_LLAMACPP_PYTHON`` or a ``.venv-llamacpp`` nearby."""
    named = python or os.environ.get(PYTHON_ENV)
    if named:
        candidates = [Path(named)]
    else:  # the current folder, then oikyo's checkout (src/oikyo/models -> the repository root)
        candidates = [Path.cwd() / ENV_DIR / "bin" / "python", Path(__file__).resolve().parents[3] / ENV_DIR / "bin" / "python"]
    for candidate in candidates:
        # Not resolved: a venv's bin/python links to the system Python, outside the environment.
        share = candidate.absolute().parent.parent / "share" / "llama.cpp"
        if candidate.is_file() and (share / "convert_hf_to_gguf.py").is_file():
            return Toolchain(python=candidate.absolute(), share=share)
    if named:
        raise OikyoError(f"{named} is not the Python of a llama.cpp environment (its environment has no "
                         f"share/llama.cpp/convert_hf_to_gguf.py). {INSTALL_HINT}")
    raise OikyoError(INSTALL_HINT)


def _check_quant(quant: str, allowed: tuple[str, ...]) -> None:
    if quant not in allowed:
        raise OikyoError(f"unknown quantization {quant!r}; choose one of {', '.join(allowed)}")


def _check_model_dir(model_dir: Path) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        raise OikyoError(f"{model_dir} holds no Hugging Face model (config.json)")


def convert(model_dir: Path, out: Path, quant: str, tools: Toolchain) -> Path:
    """Write ``model_dir`` (a Hugging Face folder, safetensors) as the GGUF file ``out``.

    The file appears whole or not at all: it is written beside ``out`` and renamed into place.
    """
    _check_quant(quant, QUANTS)
    _check_model_dir(model_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        first = Path(tmp) / ("model.gguf" if quant in WRITTEN_BY_CONVERTER else "model-f16.gguf")
        tools.run([str(tools.share / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(first),
                   "--outtype", quant if quant in WRITTEN_BY_CONVERTER else "f16"],
                  what="llama.cpp's convert_hf_to_gguf.py")
        if quant not in WRITTEN_BY_CONVERTER:
            quantized = Path(tmp) / "model.gguf"
            tools.run([str(TOOL), "quantize", str(first), str(quantized), quant], what=f"llama.cpp's {quant} quantization")
            first = quantized
        os.replace(first, out)
    return out


def convert_lora(adapter_dir: Path, base_dir: Path, out: Path, quant: str, tools: Toolchain) -> Path:
    """Write the PEFT LoRA adapter in ``adapter_dir`` (trained on ``base_dir``) as a GGUF adapter for ``--lora``."""
    _check_quant(quant, LORA_QUANTS)
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise OikyoError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json)")
    _check_model_dir(base_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        written = Path(tmp) / "adapter.gguf"
        tools.run([str(tools.share / "convert_lora_to_gguf.py"), str(adapter_dir), "--base", str(base_dir),
                   "--outfile", str(written), "--outtype", quant], what="llama.cpp's convert_lora_to_gguf.py")
        os.replace(written, out)
    return out


def _default_system(tokenizer) -> str | None:
    """The system prompt the chat template adds when a conversation has none (SmolLM2 has one)."""
    mark = "\x00user\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": mark}], tokenize=False, add_generation_prompt=True)
    head = text.split(mark, 1)[0]
    opening = f"{CHATML_MARK}system\n"
    if opening in head:
        return head.split(opening, 1)[1].split("<|im_end|>", 1)[0]
    return None


def modelfile(model_dir: Path, gguf_name: str) -> str:
    """An Ollama Modelfile for the GGUF file ``gguf_name`` made from ``model_dir``.

    A ChatML chat template gets its TEMPLATE in Ollama's syntax, its default system prompt as SYSTEM
    and its markers as stop strings, so `ollama run` builds the same prompt as the model was trained
    on. Another template is left to Ollama, which reads it from the GGUF (``tokenizer.chat_template``)
    and picks the matching built-in one; the end-of-sequence token is still a stop string.
    """
    from oikyo.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    lines = ["# Made by `oikyo models export`. Create the Ollama model with:",
             "#   ollama create NAME -f Modelfile", f"FROM ./{gguf_name}"]
    stops: list[str] = []
    if CHATML_MARK in template:
        lines.append(f'TEMPLATE """{CHATML_OLLAMA}"""')
        system = _default_system(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        stops += CHATML_STOPS
    else:
        lines.append("# TEMPLATE: taken by Ollama from the GGUF's tokenizer.chat_template")
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def write_ollama(model_dir: Path, out_dir: Path, quant: str, tools: Toolchain, *, name: str = "model") -> Path:
    """An Ollama folder: ``<name>-<quant>.gguf`` and a ``Modelfile`` that points at it. Returns the GGUF path."""
    out_dir = Path(out_dir)
    gguf_path = convert(model_dir, out_dir / f"{name}-{quant}.gguf", quant, tools)
    (out_dir / "Modelfile").write_text(modelfile(model_dir, gguf_path.name), encoding="utf-8")
    return gguf_path
