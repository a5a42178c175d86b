"""Model versions: the immutable trained models a run produces, each with its full lineage.

When a run succeeds the worker registers its output folder (an adapter or a full model) in the
same transaction that marks the run succeeded. A merged export of an adapter is a further version
whose lineage names its parent. The lineage answers "where did this model come from?" completely:
base model, dataset version and content hash, resolved config and its hash, code version (oikyo's
version and git commit when running from a checkout), seed, and the versions of the libraries that
trained it. A run may start from a model version (``model.name: mv-...``, see
:func:`oikyo.jobs.training.resolve_model_dir`): its versions' ``base_model`` is that id and their
lineage names it as ``base_model_version``. A run that trains an adapter version further
(``model.start: continue``) runs on that adapter's base: its version's ``base_model`` is the parent's
``base_model`` (so parent and child adapters share one base engine) and its lineage names the parent
adapter as ``parent_model_version`` (with ``operation: continue``), as a merged export names its adapter.

With a shared artifact store (``OIKYO_ARTIFACTS_URL``, see :mod:`oikyo.store.artifacts`) a version's
folder is also uploaded when it is registered, as blobs plus a manifest whose key the lineage records
(``manifest``); :func:`local_dir` gives the folder on any machine, materialized from the manifest
into this workspace's cache where the recorded ``path`` is not on this machine. Everything that loads
a version's weights goes through :func:`local_dir`.

Usage::

    from oikyo.jobs import model_versions
    model_versions.list_versions()                 # newest first
    mv = model_versions.get("mv-1a2b")             # an id or a unique prefix
    merged = model_versions.merge(mv.id)           # base + adapter as one Hugging Face folder
    folder = model_versions.local_dir(mv)          # its files on this machine (fetched when shared)
"""

from __future__ import annotations

import functools
import secrets
import subprocess
from importlib import metadata
from pathlib import Path

from sqlalchemy import select

from oikyo import __version__, workspace
from oikyo.errors import OikyoError
from oikyo.store import artifacts, db, manifests
from oikyo.store.models import DatasetVersion, ModelVersion, Run, utcnow

KINDS = ("adapter", "full", "merged")
PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "tokenizers", "safetensors", "datasets",
            "bitsandbytes", "liger-kernel", "flash-attn")


def new_id() -> str:
    return f"mv-{secrets.token_hex(4)}"


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """oikyo's version, plus the git commit (and whether the tree had changes) when run from a checkout."""
    info: dict = {"oikyo": __version__, "git_commit": None, "git_dirty": None}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(here), "diff", "--quiet", "HEAD", "--", "."],
                                   capture_output=True, timeout=10)
            info["git_dirty"] = dirty.returncode == 1
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape training results (absent ones are left out)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def output_kind(path: Path) -> str:
    """``adapter`` for a PEFT adapter folder, else ``full``."""
    return "adapter" if (Path(path) / "adapter_config.json").is_file() else "full"


def build(run: Run, path: Path, *, kind: str | None = None, extra: dict | None = None) -> ModelVersion:
    """A model version record for ``run``'s output at ``path`` (not yet stored)."""
    kind = kind or output_kind(path)
    if kind not in KINDS:
        raise OikyoError(f"unknown model version kind {kind!r}; kinds are {', '.join(KINDS)}")
    dataset_hash = None
    if run.dataset_version_id:
        with db.session() as s:
            version = s.get(DatasetVersion, run.dataset_version_id)
            dataset_hash = version.content_hash if version else None
    lineage = {
        "run_id": run.id,
        "base_model": run.base_model,
        "dataset_version": run.dataset_version_id,
        "dataset_hash": dataset_hash,
        "config": run.config,
        "config_hash": run.config_hash,
        "seed": run.seed,
        "code": code_version(),
        "packages": package_versions(),
        **(extra or {}),
    }
    if artifacts.is_remote():  # the folder as shared blobs, so that other machines can load it
        lineage["manifest"] = manifests.upload_folder(Path(path))
    if str(run.base_model).startswith("mv-"):  # trained from a model version (e.g. after continued pretraining)
        lineage["base_model_version"] = run.base_model
    model = run.config.get("model") if isinstance(run.config, dict) else None
    if isinstance(model, dict) and model.get("start") == "continue":  # its parent adapter, trained further
        lineage.update(parent_model_version=model.get("name"), operation="continue")
    return ModelVersion(id=new_id(), run_id=run.id, base_model=run.base_model, kind=kind,
                        path=str(Path(path).resolve()), lineage=lineage, created_at=utcnow())


def register(run_id: str, path: Path, *, kind: str | None = None, extra: dict | None = None) -> ModelVersion:
    """Store a model version for run ``run_id``'s output folder ``path``."""
    with db.session() as s:
        run = s.get(Run, run_id)
    if run is None:
        raise OikyoError(f"no run {run_id!r}")
    if not Path(path).is_dir():
        raise OikyoError(f"no model folder at {path}")
    record = build(run, path, kind=kind, extra=extra)
    with db.session() as s:
        s.add(record)
    return record


def list_versions(run_id: str | None = None, base_model: str | None = None,
                  limit: int | None = None) -> list[ModelVersion]:
    """Model versions, newest first, optionally of one run or one base model (at most ``limit``)."""
    query = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id)
    if limit:
        query = query.limit(limit)
    if run_id:
        query = query.where(ModelVersion.run_id == run_id)
    if base_model:
        query = query.where(ModelVersion.base_model == base_model)
    with db.session() as s:
        return list(s.scalars(query))


def get(ref: str) -> ModelVersion:
    """The model version with id ``ref`` or a unique prefix of it (``mv-`` may be left out)."""
    return db.by_id_prefix(ModelVersion, ref, id_prefix="mv-", noun="model version", list_hint="oikyo models versions")


def merge(ref: str, out_dir: Path | None = None) -> ModelVersion:
    """Merge an adapter version into its base model; registers and returns the ``merged`` version."""
    from oikyo.jobs import training

    parent = get(ref)
    if parent.kind != "adapter":
        raise OikyoError(f"{parent.id} is a {parent.kind} model, not an adapter; there is nothing to merge")
    merged_id = new_id()
    out_dir = Path(out_dir) if out_dir else workspace.subdir("models") / merged_id
    path = training.merge(parent.base_model, local_dir(parent), out_dir)
    lineage = {**parent.lineage, "parent_model_version": parent.id, "operation": "merge",
               "code": code_version(), "packages": package_versions()}
    lineage.pop("manifest", None)  # the parent's files, not this folder's
    if artifacts.is_remote():
        lineage["manifest"] = manifests.upload_folder(Path(path))
    record = ModelVersion(id=merged_id, run_id=parent.run_id, base_model=parent.base_model, kind="merged",
                          path=str(Path(path).resolve()), lineage=lineage, created_at=utcnow())
    with db.session() as s:
        s.add(record)
    return record


def is_available(mv: ModelVersion) -> bool:
    """Whether this machine can load ``mv``'s folder: it is here, or it is in the shared store."""
    return Path(mv.path).is_dir() or bool((mv.lineage or {}).get("manifest") and artifacts.is_remote())


def local_dir(mv: ModelVersion) -> Path:
    """``mv``'s folder on this machine: its recorded path where that exists here, else the folder
    materialized from its manifest in the shared store (checked file by file against the sha256s)."""
    if Path(mv.path).is_dir():
        return Path(mv.path)
    manifest = (mv.lineage or {}).get("manifest")
    if manifest and artifacts.is_remote():
        return manifests.materialize(manifest)
    where = " and it was not uploaded to a shared store" if not manifest else f" (set {artifacts.URL_ENV} to fetch it)"
    raise OikyoError(f"model version {mv.id}'s folder {mv.path} is not on this machine{where}")


def describe(mv: ModelVersion) -> dict:
    """A JSON-serializable description of a model version."""
    return {"id": mv.id, "run_id": mv.run_id, "base_model": mv.base_model, "kind": mv.kind, "path": mv.path,
            "created_at": mv.created_at.isoformat() if mv.created_at else None, "lineage": mv.lineage}


def lineage(ref: str) -> dict:
    """A model version with everything around it: the run and dataset version it came from (with the
    config hash) and the evaluations of it. The deployments serving it belong to a later stage: callers
    that show them add ``oikyo.serve.gateway.deployments.for_model_version(info["id"])``."""
    from oikyo.data import versions as dataset_versions
    from oikyo.evaluate import records

    mv = get(ref)
    info = describe(mv)
    run = None
    if mv.run_id:
        with db.session() as s:
            run = s.get(Run, mv.run_id)
    dataset_id = (mv.lineage or {}).get("dataset_version") or (run.dataset_version_id if run else None)
    dataset = None
    if dataset_id:
        with db.session() as s:
            record = s.get(DatasetVersion, dataset_id)
        if record is not None:
            dataset = {k: v for k, v in dataset_versions.describe(record).items() if k != "lineage"}
    info["run"] = None if run is None else {
        "id": run.id, "name": run.name, "state": run.state, "config_hash": run.config_hash,
        "dataset_version": run.dataset_version_id, "base_model": run.base_model, "seed": run.seed}
    info["dataset"] = dataset
    info["config_hash"] = (mv.lineage or {}).get("config_hash") or (run.config_hash if run else None)
    info["evaluations"] = [records.describe(e) for e in records.list_evaluations(model_version_id=mv.id, limit=None)]
    return info
