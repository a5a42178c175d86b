"""What ``oikyo eval MODEL`` means by MODEL: a model version, a run's model version, or a base model.

    target = resolve_target("mv-1a2b")          # adapter / full / merged model version
    target = resolve_target("run-9f8e")         # the model version the training run produced
    target = resolve_target("smollm2-135m-instruct")   # a base model from the catalog (or a model folder)

A :class:`Target` carries what evaluation needs: the base model, the adapter or full-model folder,
and the training data of a fine-tuned model (dataset version and split), which the overlap guard
and the default evaluation split come from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from oikyo.errors import OikyoError


@dataclass
class Target:
    """A model to evaluate. ``kind``: base, adapter, full or merged."""

    ref: str
    kind: str
    base_model: str
    model_version_id: str | None = None
    path: str | None = None  # the adapter folder (adapter) or the model folder (full, merged)
    run_id: str | None = None
    training_dataset: str | None = None
    training_split: str | None = None
    config: dict = field(default_factory=dict)  # the training run's resolved config

    @property
    def is_base(self) -> bool:
        return self.kind == "base"

    @property
    def label(self) -> str:
        return self.model_version_id or self.base_model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Target:
        return cls(**data)


def from_model_version(mv, ref: str | None = None) -> Target:
    lineage = mv.lineage or {}
    config = lineage.get("config") or {}
    data = config.get("data") or {}
    split = data.get("train_split", "train") if "train_split" in data else "train"
    return Target(ref=ref or mv.id, kind=mv.kind, base_model=mv.base_model, model_version_id=mv.id, path=mv.path,
                  run_id=mv.run_id, training_dataset=lineage.get("dataset_version"), training_split=split,
                  config=config)


def _from_run(ref: str) -> Target:
    from oikyo.jobs import model_versions, runs

    run = runs.resolve(ref)
    if getattr(run, "kind", "train") == "eval":
        raise OikyoError(f"{run.id} is an evaluation job, not a training run; give a model version or a training run")
    found = model_versions.list_versions(run_id=run.id)
    if not found:
        raise OikyoError(f"run {run.id} ({run.state}) has no model version yet; evaluate it once it has succeeded")
    own = [mv for mv in found if mv.kind != "merged"] or found
    return from_model_version(own[-1], ref)  # the oldest: the run's own output, not a later merge


def resolve_target(ref: str) -> Target:
    """The model a user means by ``ref`` (model version id, run id, or base model name / folder)."""
    from oikyo.jobs import model_versions
    from oikyo.models import catalog

    ref = ref.strip()
    if ref.startswith("mv-"):
        return from_model_version(model_versions.get(ref), ref)
    if ref.startswith("run-"):
        return _from_run(ref)
    try:
        catalog.resolve_model_dir(ref)
        return Target(ref=ref, kind="base", base_model=ref)
    except catalog.ModelError as error:
        catalog_error = error
    for attempt in (lambda: from_model_version(model_versions.get(ref), ref), lambda: _from_run(ref)):
        try:
            return attempt()
        except OikyoError:
            continue
    raise OikyoError(f"{ref!r} is not a model version (`oikyo models versions`), a run (`oikyo runs list`) or a "
                     f"base model ({catalog_error})")
