"""Load base models and tokenizers from local folders, and describe a model folder without loading it.

A model here is a Hugging Face folder (``config.json`` + safetensors + tokenizer files), such as the
converted bundled model (:func:`oikyo.models.bundled.ensure_bundled_model`). A path to a ``.gguf``
file also works for loading (transformers de-quantizes it on every load, so prefer converting)::

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)                # float32 on CPU, eval mode
    model_info(model_dir)                        # {"parameters": 134515008, "context_length": 8192, ...}

Tests build tiny random models with :func:`tiny_model_dir` (the real tokenizer, a 2-layer Llama).
Nothing here downloads: every load is ``local_files_only``. Weights load from safetensors only
(``use_safetensors=True``): a folder whose weights are only pickled (``pytorch_model.bin``,
``adapter_model.bin``, ``.pt``) is refused with :class:`PickledWeights`, since unpickling runs code.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from oikyo.errors import OikyoError

DEFAULT_CONTEXT_LENGTH = 2048
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class PickledWeights(OikyoError):
    """A model or adapter folder whose weights are only in pickle form: oikyo never unpickles them."""


def require_safetensors(folder: str | Path, what: str = "model") -> None:
    """Refuse ``folder`` (a ``model`` or an ``adapter``) when its weights are only pickled files, with
    a message saying how to convert them. Folders with safetensors weights, or with no weights at all
    (the loader's own error then says so), pass."""
    folder = Path(folder)
    wanted = "adapter_model.safetensors" if what == "adapter" else "*.safetensors"
    if not folder.is_dir() or any(folder.glob(wanted)):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise PickledWeights(
            f"{folder} has its {what} weights only in pickle form ({', '.join(pickled)}); oikyo loads "
            "safetensors only, since unpickling a file can run any code. Convert them with a tool you trust "
            "(save_pretrained(..., safe_serialization=True)) and keep only the .safetensors files.")
# config.json keys that hold the context length, most common first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def _source(model_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder to pass to ``from_pretrained`` and extra keyword arguments (``gguf_file`` for a GGUF path)."""
    path = Path(model_dir)
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    return path, {}


def load_tokenizer(model_dir: str | Path, *, trust_remote_code: bool = False):
    """The (fast) tokenizer saved with a model, with a pad token set (the eos token when it has none)."""
    from transformers import AutoTokenizer

    folder, extra = _source(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(
        folder, trust_remote_code=trust_remote_code, local_files_only=True, **extra
    )
    # Batching needs a pad token; padded positions are masked, so reusing eos is harmless.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str | Path, dtype=None, device: str = "cpu", *, trust_remote_code: bool = False):
    """A causal language model from ``model_dir`` in ``dtype`` (default float32) on ``device``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar is noise in oikyo's own output
    folder, extra = _source(model_dir)
    if not extra:  # a GGUF file is no pickle; a folder must hold safetensors
        require_safetensors(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype or torch.float32,
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        use_safetensors=None if extra else True,  # True: never fall back to pytorch_model.bin
        **extra,
    )
    return model.to(device).eval()


def read_config(model_dir: str | Path) -> dict:
    """``config.json`` of a model folder as a dict ({} when absent)."""
    path = Path(model_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def context_length(model_dir: str | Path) -> int:
    """The model's context length in tokens, from its config (``max_position_embeddings`` and kin)."""
    config = read_config(model_dir)
    # Multimodal / composite configs keep the language model's settings under text_config.
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(section.get(key), int) and section[key] > 0:
                return section[key]
    # A tokenizer-only folder (the bundled tokenizer extracted alone) records it as model_max_length;
    # tokenizers without a real limit store a huge sentinel there, which is ignored.
    tokenizer_config = Path(model_dir) / "tokenizer_config.json"
    if tokenizer_config.is_file():
        limit = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(limit, int) and 0 < limit <= 1_000_000:
            return limit
    return DEFAULT_CONTEXT_LENGTH


def safetensors_parameter_count(model_dir: str | Path) -> int | None:
    """Number of weights in the folder's safetensors files, read from their headers only (no tensor data).

    None when the folder has no safetensors files. Tied weights saved once count once.
    """
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            # Format: 8-byte little-endian header length, then a JSON header {name: {dtype, shape, offsets}}.
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


def _meta_parameter_count(model_dir: Path) -> int | None:
    """Parameter count from the config alone, building the model on the meta device (no memory used)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # an exotic architecture: the count is informative only
        return None
    return sum(p.numel() for p in model.parameters())


def _license(model_dir: Path, config: dict) -> str | None:
    """The license from the model card's YAML front matter, else from config.json."""
    readme = model_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(errors="replace")
        if text.startswith("---"):
            import yaml

            try:
                front = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                front = {}
            if isinstance(front, dict) and front.get("license"):
                return str(front["license"])
    return config.get("license")


def has_chat_template(model_dir: str | Path) -> bool:
    """True when the folder's tokenizer carries a chat template (a .jinja file or tokenizer_config entry)."""
    folder = Path(model_dir)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        return bool(json.loads(config_path.read_text()).get("chat_template"))
    return False


def model_info(model_dir: str | Path) -> dict:
    """Describe a model folder without loading its weights.

    Keys: path, architecture, model_type, parameters, context_length, vocab_size, hidden_size,
    layers, dtype, has_chat_template, license.
    """
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    config = read_config(folder)
    text_config = config.get("text_config") or config
    parameters = safetensors_parameter_count(folder)
    if parameters is None:
        parameters = _meta_parameter_count(folder)
    return {
        "path": str(folder),
        "architecture": (config.get("architectures") or [None])[0],
        "model_type": config.get("model_type"),
        "parameters": parameters,
        "context_length": context_length(folder),
        "vocab_size": text_config.get("vocab_size"),
        "hidden_size": text_config.get("hidden_size"),
        "layers": text_config.get("num_hidden_layers"),
        "dtype": config.get("dtype") or config.get("torch_dtype"),
        "has_chat_template": has_chat_template(folder),
        "license": _license(folder, config),
    }


def tiny_model_dir(
    path: str | Path,
    tokenizer_dir: str | Path,
    layers: int = 2,
    hidden: int = 32,
    *,
    context_length: int = 2048,
    seed: int = 0,
    head_dim: int = 16,
) -> Path:
    """Save a tiny random Llama model (vocabulary from ``tokenizer_dir``) with that tokenizer into ``path``.

    For tests: it loads and runs like a real model (same tokenizer and chat template) in
    milliseconds. The same ``seed`` gives the same weights; the caller's RNG state is untouched.
    ``head_dim`` 32 or more suits engines with a minimum (vLLM's CPU attention).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    heads = max(1, hidden // head_dim)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),  # grouped-query attention, like the real model
        max_position_embeddings=context_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
