"""Which model a name in a request means, and which names one loaded model answers to.

A deployment serves model versions (adapters, full or merged models) or base models. What an engine
must load is the *load folder*: the base model for an adapter, the model's own folder otherwise.
Every variant with the same load folder shares one engine (one pool of replicas), and that engine
also answers for every adapter model version trained on its base, loaded on demand::

    spec = resolve("mv-1a2b")              # ModelSpec(id, kind, load_dir, adapter_dir, base_model)
    names = ServedNames(spec.load_dir, [spec])
    names.lookup("mv-1a2b")                 # ("mv-1a2b", adapter folder) | (name, None) for the model itself
    names.lookup("mv-other", refresh_on_miss=True)   # another adapter on that base, registered later
    names.names()                          # everything it answers to (GET /v1/models)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from oikyo.errors import OikyoError

@dataclass(frozen=True)
class ModelSpec:
    """A servable model: ``id`` is what clients put in ``model``."""

    id: str
    kind: str  # adapter | full | merged | base
    load_dir: str  # the folder the engine loads (resolved path)
    adapter_dir: str | None = None
    base_model: str | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "load_dir": self.load_dir, "adapter_dir": self.adapter_dir,
                "base_model": self.base_model}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(**{k: data.get(k) for k in ("id", "kind", "load_dir", "adapter_dir", "base_model")})


def _resolved(path) -> str:
    return str(Path(path).resolve())


def resolve(ref: str) -> ModelSpec:
    """A model version id (or unique prefix), a catalog base model name, or a model folder, as a spec."""
    from oikyo.jobs import model_versions
    from oikyo.models import catalog

    ref = ref.strip()
    if not ref.startswith("mv-"):
        try:
            return ModelSpec(id=ref, kind="base", load_dir=_resolved(catalog.resolve_model_dir(ref)), base_model=ref)
        except OikyoError:
            pass
    try:
        mv = model_versions.get(ref)
    except OikyoError:
        raise OikyoError(f"unknown model {ref!r}: not a model version (`oikyo models versions`), a base model "
                         "(`oikyo models list`) or a model folder") from None
    if not model_versions.is_available(mv):
        raise OikyoError(f"model version {mv.id}'s folder {mv.path} no longer exists")
    folder = model_versions.local_dir(mv)  # fetched from the shared artifact store when not on this machine
    if mv.kind == "adapter":
        from oikyo.jobs.training import resolve_model_dir  # a base that is itself a model version, too

        base_dir = resolve_model_dir(mv.base_model)
        return ModelSpec(id=mv.id, kind="adapter", load_dir=_resolved(base_dir), adapter_dir=_resolved(folder),
                         base_model=mv.base_model)
    return ModelSpec(id=mv.id, kind=mv.kind, load_dir=_resolved(folder), base_model=mv.base_model)


def adapters_on(load_dir: str) -> dict[str, str]:
    """Every adapter model version whose base model resolves to ``load_dir``: id -> adapter folder."""
    from oikyo.jobs import model_versions

    found: dict[str, str] = {}
    bases: dict[str, str | None] = {}
    for mv in model_versions.list_versions():
        if mv.kind != "adapter" or not model_versions.is_available(mv):
            continue
        if mv.base_model not in bases:
            bases[mv.base_model] = _existing_base_dir(mv.base_model)
        if bases[mv.base_model] == load_dir:
            found[mv.id] = _resolved(model_versions.local_dir(mv))
    return found


def _existing_base_dir(ref: str) -> str | None:
    """The resolved folder of a base model that is already on disk (never converts or downloads)."""
    from oikyo import workspace
    from oikyo.models import bundled, catalog

    if ref == catalog.BUNDLED_NAME:
        folder = workspace.subdir("models") / bundled.MODEL_FOLDER
        return _resolved(folder) if bundled.is_complete(folder) else None
    if ref.startswith("mv-"):  # a model version as base: its folder, or its merge when one was made
        from oikyo.jobs import model_versions, training

        try:
            mv = model_versions.get(ref)
            found = mv if mv.kind != "adapter" else training.merged_version_of(mv.id)
        except OikyoError:
            return None
        return (_resolved(model_versions.local_dir(found))
                if found is not None and model_versions.is_available(found) else None)
    try:
        return _resolved(catalog.resolve_model_dir(ref))
    except OikyoError:
        return None


class ServedNames:
    """The names one engine (one load folder) answers to.

    ``specs`` are the deployment's variants on this folder. Base and full/merged models map to no
    adapter; adapter versions on this base map to their folder. Adapter versions registered after
    start are found on a miss (``lookup(name, refresh_on_miss=True)`` reads the store again).
    """

    def __init__(self, load_dir: str, specs: list[ModelSpec], discover: bool = True):
        self.load_dir = load_dir
        self.discover = discover
        self._fixed: dict[str, str | None] = {}
        for spec in specs:
            self._fixed[spec.id] = spec.adapter_dir
        self._adapters: dict[str, str] = {}
        self._lock = threading.Lock()
        if discover:
            self.refresh()

    def refresh(self) -> None:
        found = adapters_on(self.load_dir)
        with self._lock:
            self._adapters = found

    def lookup(self, name: str, refresh_on_miss: bool = False) -> tuple[str, str | None] | None:
        """``(name, adapter folder or None)`` when this engine serves ``name``; None when it does not.

        ``refresh_on_miss``: read the store again before answering None (blocking I/O: call it
        from a worker thread, not the event loop).
        """
        if name in self._fixed:
            return name, self._fixed[name]
        with self._lock:
            if name in self._adapters:
                return name, self._adapters[name]
        if refresh_on_miss and self.discover:
            self.refresh()
            with self._lock:
                if name in self._adapters:
                    return name, self._adapters[name]
        return None

    def names(self) -> dict[str, str | None]:
        """Every name served: name -> adapter folder (None for the loaded model itself)."""
        with self._lock:
            return {**self._adapters, **self._fixed}
