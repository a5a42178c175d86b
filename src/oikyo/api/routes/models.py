"""REST routes: base models (the catalog) and fine-tuned model versions with their lineage.

Adapters over :mod:`oikyo.models.catalog`, :mod:`oikyo.models.estimate` and
:mod:`oikyo.jobs.model_versions` (with :mod:`oikyo.serve.gateway.deployments` for the deployments
serving a version), as `oikyo models ...` uses them. The leaderboard lives with the
evaluations routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from oikyo.api.refs import check_ref
from oikyo.jobs import model_versions
from oikyo.models import catalog

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models() -> list[dict]:
    """The base-model catalog, the bundled offline default first."""
    return catalog.list_models()


def _catalog_name(name: str) -> str:
    """A name the catalog holds (the API never describes arbitrary folders by path)."""
    check_ref(name, "model name")
    if name not in {m["name"] for m in catalog.list_models()}:
        raise HTTPException(404, f"No model named {name!r} in the catalog (GET /api/v1/models lists them).")
    return name


@router.get("/models/{name}")
def show_model(name: str, method: Literal["lora", "full", "qlora"] = "lora",
               batch_size: int = Query(8, ge=1, le=4096), max_length: int = Query(512, ge=1, le=1 << 20),
               tokens: int = Query(1_000_000, ge=0)) -> dict:
    """Parameters, context length, chat template and license, plus a memory/time estimate for a config.

    The bundled model is converted once on first use (about half a minute).
    """
    from oikyo.models.estimate import estimate

    info = catalog.describe(_catalog_name(name))
    guess = estimate(info, method=method, batch_size=batch_size, max_length=max_length, tokens=tokens)
    return {"model": info, "estimate": guess}


class AddModel(BaseModel):
    source: str = Field(..., description="An absolute path to a local Hugging Face folder (safetensors) or a "
                                         ".gguf file on the server's machine, or the bundled model's name.")
    name: str | None = Field(None, description="Catalog name (default: from the source).")
    trust_remote_code: bool = Field(False, description="Allow the model's own Python code to run when loading.")


def _local_source(source: str) -> Path:
    """An existing absolute path with no '..' (Hub downloads are left to the CLI)."""
    if "\x00" in source:
        raise HTTPException(400, "The source must not contain NUL.")
    path = Path(source)
    if not path.is_absolute() or ".." in path.parts or "\\" in source:
        raise HTTPException(400, "The source must be an absolute path on the server's machine without '..' "
                                 "(a model folder or a .gguf file), or the bundled model's name.")
    if not path.exists():
        raise HTTPException(404, f"No such file or folder: {source}")
    return path


@router.post("/models", status_code=201)
def add_model(body: AddModel) -> dict:
    """Add a local model folder or GGUF file to the catalog (GGUF is converted once: can take a minute).

    ``{"source": "smollm2-135m-instruct"}`` prepares the bundled model instead (converted on first use).
    """
    if body.name is not None:
        check_ref(body.name, "model name")
    if body.source == catalog.BUNDLED_NAME:
        return catalog.describe(catalog.BUNDLED_NAME)
    path = _local_source(body.source)
    return catalog.add_model(str(path), name=body.name, trust_remote_code=body.trust_remote_code)


@router.get("/model-versions")
def list_model_versions(run: str | None = None, base: str | None = None) -> list[dict]:
    """Fine-tuned model versions, newest first (``?run=`` one run's, ``?base=`` one base model's)."""
    found = model_versions.list_versions(run_id=check_ref(run, "run id"), base_model=check_ref(base, "base model"))
    return [model_versions.describe(mv) for mv in found]


@router.get("/model-versions/{ref}")
def show_model_version(ref: str) -> dict:
    """One model version with its lineage: base model, dataset version, run and config hash, code and
    package versions, the evaluations of it and the deployments serving it."""
    from oikyo.serve.gateway import deployments

    info = model_versions.lineage(check_ref(ref, "model version id"))
    # Serving comes after jobs/ in the pipeline, so the lineage's last step is added here, not in jobs/.
    info["deployments"] = deployments.for_model_version(info["id"])
    return info


@router.delete("/models/{name}")
def remove_model(name: str) -> dict:
    """Forget a model in the catalog (its files are left alone)."""
    catalog.remove_model(_catalog_name(name))
    return {"removed": name}


@router.post("/model-versions/{ref}/merge", status_code=201)
def merge_model_version(ref: str) -> dict:
    """Merge an adapter version into its base model: a new ``merged`` version in Hugging Face layout
    that plain transformers loads (`oikyo models merge`; takes as long as loading the model)."""
    merged = model_versions.merge(check_ref(ref, "model version id"))
    return model_versions.describe(merged)
