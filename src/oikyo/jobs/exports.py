"""Exports of model versions: a GGUF file, a GGUF LoRA adapter, an Ollama folder or a Hugging Face folder.

An adapter version is exported merged into its base (the merged version that
:func:`oikyo.jobs.training.model_version_dir` makes once and reuses), or, with ``lora=True`` and
``to="gguf"``, as a GGUF LoRA adapter for llama.cpp's ``--lora``. The conversions themselves are
llama.cpp's (:mod:`oikyo.models.export_gguf`). Each export is recorded on the exported version, in
``lineage["exports"]``: format, quantization, path, size, sha256, the llama.cpp release that wrote it
and the merged version it came from (for an adapter). The model itself never changes, so a version
stays what it was; the list only says where copies of it went.

Usage::

    from oikyo.jobs import exports
    record = exports.export("mv-1a2b", to="gguf", quant="q4_k_m")   # record["path"], record["sha256"]
    exports.export("mv-1a2b", to="ollama", out=Path("ollama-model"))  # GGUF + Modelfile
    exports.export_file("mv-1a2b", 0)      # the first export's file (the dashboard's download)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.store import artifacts, db
from oikyo.store.models import ModelVersion, utcnow

FORMATS = ("gguf", "ollama", "hf")


def _default_out(mv_id: str, to: str, quant: str, lora: bool) -> Path:
    folder = workspace.subdir("exports")
    if to == "gguf":
        return folder / f"{mv_id}-{'lora-' if lora else ''}{quant}.gguf"
    return folder / f"{mv_id}-{to}"


def _gguf_target(out: Path, mv_id: str, quant: str, lora: bool) -> Path:
    """``out`` itself, or a file named after the version inside ``out`` when that is a folder."""
    if out.is_dir() or out.suffix.lower() != ".gguf":
        return out / f"{mv_id}-{'lora-' if lora else ''}{quant}.gguf"
    return out


def _check(to: str, quant: str, lora: bool, kind: str) -> None:
    from oikyo.models import export_gguf

    if to not in FORMATS:
        raise OikyoError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    if lora and to != "gguf":
        raise OikyoError("--lora writes a GGUF LoRA adapter: use it with --to gguf")
    if lora and kind != "adapter":
        raise OikyoError(f"--lora exports a LoRA adapter, and this model version is a {kind} model")
    if to != "hf":
        allowed = export_gguf.LORA_QUANTS if lora else export_gguf.QUANTS
        if quant not in allowed:
            raise OikyoError(f"unknown quantization {quant!r} for this export; choose one of {', '.join(allowed)}")


def export(ref: str, *, to: str = "gguf", quant: str = "f16", out: Path | None = None, lora: bool = False,
           llamacpp_python: str | Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Export model version ``ref``; returns the record added to its ``lineage["exports"]``."""
    from oikyo.jobs import model_versions, training
    from oikyo.models import export_gguf

    mv = model_versions.get(ref)
    _check(to, quant, lora, mv.kind)
    out = Path(out) if out else _default_out(mv.id, to, quant, lora)
    if to == "ollama" and out.exists() and not out.is_dir():
        raise OikyoError(f"{out} is a file; --out names the folder for the GGUF file and the Modelfile")
    tools = export_gguf.toolchain(llamacpp_python) if to != "hf" else None
    record: dict = {"format": to, "created_at": utcnow().isoformat()}
    if tools is not None:  # asked first: a broken environment fails before any work
        record["llama_cpp_python"] = tools.version()
    if lora:
        adapter = model_versions.local_dir(mv)
        path = export_gguf.convert_lora(adapter, training.resolve_model_dir(mv.base_model, log=log),
                                        _gguf_target(out, mv.id, quant, lora), quant, tools)
        record.update(quant=quant, lora=True)
    else:
        source = training.model_version_dir(mv.id, log=log)  # an adapter: merged into its base, once
        if mv.kind == "adapter":
            record["merged_version"] = training.merged_version_of(mv.id).id
        if to == "gguf":
            path = export_gguf.convert(source, _gguf_target(out, mv.id, quant, lora), quant, tools)
        elif to == "ollama":
            path = export_gguf.write_ollama(source, out, quant, tools, name=mv.id)
            record["modelfile"] = str((out / "Modelfile").resolve())
        else:
            path = _copy_folder(source, out)
        if to != "hf":
            record["quant"] = quant
    record["path"] = str(Path(path).resolve())
    if Path(path).is_file():
        record.update(bytes=Path(path).stat().st_size, sha256=artifacts.file_sha256(path))
    _record(mv.id, record)
    return record


def _copy_folder(source: Path, out: Path) -> Path:
    """The Hugging Face folder copied to ``out`` (which must not hold anything yet).

    The copy is made beside ``out`` and renamed into place, so a failed copy (a full disk) leaves no
    half-written folder under that name.
    """
    from oikyo.store import disk

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OikyoError(f"{out} is not empty; choose another --out for the Hugging Face folder")
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    with disk.errors(f"could not export to {out}", "no folder was written"):
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, staging)
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(staging, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _record(mv_id: str, record: dict) -> None:
    with db.session() as s:
        mv = s.get(ModelVersion, mv_id)
        lineage = dict(mv.lineage or {})
        lineage["exports"] = [*lineage.get("exports", []), record]
        mv.lineage = lineage  # a new dict, so the JSON column is written


def list_exports(ref: str) -> list[dict]:
    """The exports recorded for model version ``ref``, oldest first."""
    from oikyo.jobs import model_versions

    return list((model_versions.get(ref).lineage or {}).get("exports", []))


def export_file(ref: str, index: int) -> Path:
    """The file of model version ``ref``'s export number ``index`` (0 = oldest), for downloading.

    Only paths the store recorded are ever returned, and only while they are files on this machine.
    """
    recorded = list_exports(ref)
    if not 0 <= index < len(recorded):
        raise OikyoError(f"model version {ref} has no export number {index} ({len(recorded)} recorded)")
    path = Path(recorded[index]["path"])
    if not path.is_file():
        raise OikyoError(f"export {index} of {ref} ({recorded[index]['format']}) is no longer a file at {path}")
    return path
