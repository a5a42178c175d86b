"""The bridge between the job system and the training recipe (see docs/contracts-training.md).

Submitting: :func:`submit_training` loads and validates the whole config, resolves the dataset
and base-model references, pins the dataset to its exact version id, writes the resolved config
to ``runs/<run-id>/config.yaml`` and only then queues the run. Every problem is reported at once
(:class:`SubmitError`), and nothing is queued when there is one.

Running: :func:`execute` turns a claimed run back into the recipe's arguments (config, run folder,
model folder, row readers) and calls ``run_training``.

Starting from a model version (``model.name: mv-...``): ``model.start: merge`` (the default) trains on
the version as a plain model (an adapter merged once, :func:`model_version_dir`); ``model.start:
continue`` trains an adapter version's adapter further on that adapter's own base (:func:`continue_from`),
so the run's ``base_model`` is the parent's base and the new adapter serves beside its parent.
``data.mix_dataset: parent`` replays the training split of the dataset version that trained the model
version (:func:`parent_replay`, from its lineage).

The recipe is ``oikyo.train.config`` + ``oikyo.train.runner``. ``OIKYO_RECIPE=some.module`` swaps in
another module that provides the same names (``TrainConfig``, ``load_config``, ``config_hash``,
``run_training`` and optionally ``merge_adapter``); the tests use this to drive the job system with
a fast fake recipe, in worker processes too.

Usage::

    from oikyo.jobs import training
    run = training.submit_training("run.yaml", ["train.lr=1e-4"])
    run = training.submit_training(None, dataset="support", model="smollm2-135m-instruct")
    run = training.submit_config({"data": {"dataset": "support"}, "train": {"lr": 1e-4}})  # the REST API's way
"""

from __future__ import annotations

import importlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.store.models import DatasetVersion, ModelVersion, Run

RECIPE_ENV = "OIKYO_RECIPE"


class SubmitError(OikyoError):
    """The run cannot be queued: one line per problem found (also in ``problems``, "dotted.path: message" each)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass(frozen=True)
class Recipe:
    """The functions of the training contract, from ``oikyo.train`` or the ``OIKYO_RECIPE`` module."""

    load_config: Callable[..., Any]
    config_hash: Callable[[Any], str]
    parse: Callable[[dict], Any]  # resolved config dict -> TrainConfig
    run_training: Callable[..., Any]
    merge_adapter: Callable[..., Path] | None


def recipe() -> Recipe:
    """The recipe in use (``OIKYO_RECIPE`` when set, else ``oikyo.train``)."""
    spec = os.environ.get(RECIPE_ENV)
    if spec:
        module = importlib.import_module(spec)
        config_module = runner_module = module
    else:
        try:
            config_module = importlib.import_module("oikyo.train.config")
            runner_module = importlib.import_module("oikyo.train.runner")
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("oikyo.train"):
                raise
            raise OikyoError(f"the training recipe is not available in this install ({error.name} is missing)") from None
    return Recipe(
        load_config=config_module.load_config,
        config_hash=config_module.config_hash,
        parse=config_module.TrainConfig.model_validate,
        run_training=runner_module.run_training,
        merge_adapter=getattr(runner_module, "merge_adapter", None),
    )


def is_model_version_ref(name: str) -> bool:
    """Whether a base-model reference names a model version (``mv-...``) rather than a catalog model."""
    return isinstance(name, str) and name.startswith("mv-")


def resolve_model_dir(name: str, log: Callable[[str], None] | None = None) -> Path:
    """The local folder of base model ``name``: a catalog name, a model folder, or a model version id.

    A model version (``mv-...``, e.g. a continued-pretraining run's output) is how a run starts from a
    model oikyo trained: a full or merged version is used as it is; an adapter version is merged into
    its own base once (a ``merged`` model version whose lineage names the adapter), and that merged
    folder is reused by every later run, evaluation and server. The lookup lives here, in jobs, the
    layer that owns both the model versions and the catalog (:mod:`oikyo.models` sits below it).
    """
    if is_model_version_ref(name):
        return model_version_dir(name, log=log)
    from oikyo.models.catalog import resolve_model_dir as resolve

    return Path(resolve(name, log=log))


def model_version_dir(ref: str, log: Callable[[str], None] | None = None, *, merge: bool = True) -> Path | None:
    """The folder of a model version as a plain transformers model (adapters merged once, see above).

    ``merge=False`` only checks that the version can be used (its folder, and an adapter's base) and
    returns None for an adapter not merged yet: submitting a run stays quick, and the worker merges.
    """
    from oikyo.jobs import model_versions

    mv = model_versions.get(ref)
    if mv.kind == "adapter":
        if not model_versions.is_available(mv):
            raise OikyoError(f"model version {mv.id}'s adapter folder {mv.path} no longer exists")
        merged = merged_version_of(mv.id)
        if merged is None and not merge:
            resolve_model_dir(mv.base_model, log=log)  # its base must still be there to merge onto
            return None
        if merged is None:
            if log:
                log(f"Merging adapter version {mv.id} into its base {mv.base_model} (once; kept as a merged version)")
            merged = model_versions.merge(mv.id)
            if log:
                log(f"Merged {mv.id} as {merged.id} ({merged.path})")
        mv = merged
    path = model_versions.local_dir(mv) if model_versions.is_available(mv) else Path(mv.path)
    if not (path / "config.json").is_file():
        raise OikyoError(f"model version {mv.id}'s folder {path} is missing or holds no model (config.json)")
    return path


def merged_version_of(adapter_id: str):
    """The newest merged model version made from adapter version ``adapter_id`` whose folder exists, or None."""
    from oikyo.jobs import model_versions

    adapter = model_versions.get(adapter_id)
    for mv in model_versions.list_versions(run_id=adapter.run_id):
        if (mv.kind == "merged" and (mv.lineage or {}).get("parent_model_version") == adapter_id
                and ((Path(mv.path) / "config.json").is_file() or model_versions.is_available(mv))):
            return mv
    return None


def config_seed(config: Any) -> int | None:
    """The run's seed, wherever the config keeps it (``train.seed``, else a top-level ``seed``)."""
    for holder in (getattr(config, "train", None), config):
        seed = getattr(holder, "seed", None)
        if isinstance(seed, int):
            return seed
    return None


@dataclass
class PreparedRun:
    """A validated config with its references resolved: everything needed to queue a run."""

    config: Any
    config_dict: dict
    config_hash: str
    dataset: DatasetVersion
    model_dir: Path | None  # None: an adapter model version, merged by the worker when the run starts
    seed: int | None
    name: str
    base_model: str | None = None  # the run's base model when not model.name (model.start=continue)


def prepare(config_path: str | Path | None = None, overrides: Iterable[str] = (), *,
            dataset: str | None = None, model: str | None = None, name: str | None = None,
            log: Callable[[str], None] | None = None) -> PreparedRun:
    """Load and validate the config, then resolve its dataset and model (all problems at once)."""
    rec = recipe()
    quick = {key: value for key, value in (("dataset", dataset), ("model", model)) if value}
    config = rec.load_config(config_path, list(overrides), **quick)  # ConfigError lists every problem
    return _pin(rec, config, name=name, log=log)


def _pin(rec: Recipe, config: Any, *, name: str | None, log=None) -> PreparedRun:
    """Resolve the references of a valid config and pin the dataset to its version id."""
    problems, version, model_dir = _reference_problems(config.data.dataset, config.model.name,
                                                       splits=_splits_of(config), log=log)
    if version is not None:
        problems += method_kind_problems(getattr(getattr(config, "method", None), "name", None), version)
    parent = _named_version(config.model.name)
    base_model = None
    if parent is not None and is_continue(config):
        problems += [p for p in continue_problems(config, parent) if p not in problems]  # (a gone folder: once)
        base_model = parent.base_model  # the new adapter sits on the parent's base, not on the parent
        if not any(p.startswith("model.name:") for p in problems):  # (a missing base is reported there)
            model_dir = _base_dir(parent.base_model, problems, log)
    if parent is not None and _replays_parent(config):
        try:
            parent_replay_source(parent)
        except OikyoError as error:
            problems.append(str(error))
    replay = _replay_version(config, problems)
    if problems:
        raise SubmitError("the run was not queued:\n" + "\n".join(f"  - {p}" for p in problems), problems)
    data = config.model_dump(mode="json")
    data["data"]["dataset"] = version.id  # the exact version, whatever the name points at later
    if replay is not None:
        data["data"]["mix_dataset"] = replay.id  # pinned the same way
    if is_model_version_ref(config.model.name):  # the full id, as for the dataset (a prefix may become ambiguous)
        from oikyo.jobs import model_versions

        data["model"]["name"] = model_versions.get(config.model.name).id
    config = rec.parse(data)
    resolved = config.model_dump(mode="json")
    run_name = name or getattr(config, "name", None) or f"{version.name}-{Path(str(config.model.name)).name}"
    return PreparedRun(config=config, config_dict=resolved, config_hash=rec.config_hash(config),
                       dataset=version, model_dir=model_dir, seed=config_seed(config), name=str(run_name)[:200],
                       base_model=base_model)


def _replay_version(config: Any, problems: list[str]) -> DatasetVersion | None:
    """The dataset version replayed by data.mix (None for the shipped set); a problem line when it cannot be.

    ``parent`` stays as it is in the recorded config: model.name is pinned to the full id and lineages
    are immutable, so it names the same rows for good (:func:`parent_replay_source`).
    """
    if not getattr(config.data, "mix", 0) or not getattr(config.data, "mix_dataset", None) or _replays_parent(config):
        return None
    from oikyo.data.replay import ReplayError, resolve_mix_dataset

    try:
        return resolve_mix_dataset(config.data.mix_dataset)
    except ReplayError as error:
        problems.append(str(error))
        return None


def is_continue(config: Any) -> bool:
    """Whether the config trains its model version's adapter further (``model.start: continue``)."""
    return getattr(config.model, "start", "merge") == "continue" and is_model_version_ref(config.model.name)


def _replays_parent(config: Any) -> bool:
    from oikyo.data.replay import PARENT

    return getattr(config.data, "mix_dataset", None) == PARENT and bool(getattr(config.data, "mix", 0))


def _named_version(name: Any) -> ModelVersion | None:
    """The model version ``model.name`` names, or None (not a version; an unknown one is reported elsewhere)."""
    if not is_model_version_ref(name):
        return None
    from oikyo.jobs import model_versions

    try:
        return model_versions.get(name)
    except OikyoError:
        return None


def _base_dir(ref: str, problems: list[str], log=None) -> Path | None:
    """The folder of a continued adapter's base (an adapter model version is only checked, see model_version_dir)."""
    try:
        if is_model_version_ref(ref):
            return model_version_dir(ref, log=log, merge=False)
        return resolve_model_dir(ref, log=log)
    except OikyoError as error:
        problems.append(f"model.name: the base model {ref} of the adapter to continue: {error}")
        return None


def adapter_shape(mv: ModelVersion) -> dict[str, Any]:
    """The LoRA shape of adapter version ``mv``: rank and alpha from its adapter_config.json; target
    modules as its run's config gave them (peft saves "all-linear" expanded to module names), else the file's."""
    import json

    from oikyo.jobs import model_versions

    file = model_versions.local_dir(mv) / "adapter_config.json"
    if not file.is_file():
        raise OikyoError(f"model version {mv.id}'s adapter folder {mv.path} holds no adapter_config.json")
    saved = json.loads(file.read_text())
    recorded = (((mv.lineage or {}).get("config") or {}).get("lora") or {}).get("target_modules")
    return {"rank": saved.get("r"), "alpha": saved.get("lora_alpha"),
            "target_modules": recorded if recorded is not None else saved.get("target_modules")}


def _same_modules(a: Any, b: Any) -> bool:
    def norm(value):
        return value.lower() if isinstance(value, str) else sorted(set(value or []))

    return norm(a) == norm(b)


def continue_problems(config: Any, parent: ModelVersion) -> list[str]:
    """Why ``parent``'s adapter cannot be trained further with ``config`` (model.start=continue), if it cannot.

    The config's LoRA shape must be the adapter's: the run trains those very matrices, and the config
    (and its hash) should say what was trained. Only lora.dropout, a training setting, may differ.
    """
    if parent.kind != "adapter":
        return [f"model.start: continue trains an adapter further, but {parent.id} is a {parent.kind} model; "
                "use model.start=merge to fine-tune on it"]
    from oikyo.jobs import model_versions

    if not model_versions.is_available(parent):
        return [f"model.name: model version {parent.id}'s adapter folder {parent.path} no longer exists"]
    try:
        shape = adapter_shape(parent)
    except OikyoError as error:
        return [f"model.name: {error}"]
    lora = config.lora
    problems = []
    same = {"rank": lora.rank == shape["rank"],
            "alpha": shape["alpha"] is not None and float(lora.alpha) == float(shape["alpha"]),
            "target_modules": _same_modules(lora.target_modules, shape["target_modules"])}
    for field, matches in same.items():
        if not matches:
            want = getattr(lora, field)
            have = shape[field]
            shown = sorted(have) if isinstance(have, (list, set)) else have
            problems.append(f"lora.{field}: {want!r} differs from the {field} of {parent.id}'s adapter ({shown!r}), "
                            f"which model.start=continue trains further; set lora.{field} to the adapter's value")
    return problems


def continue_from(config: Any, log: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """(base model folder, adapter folder) of a ``model.start: continue`` run."""
    from oikyo.jobs import model_versions

    parent = model_versions.get(config.model.name)
    problems = continue_problems(config, parent)
    if problems:
        raise OikyoError("cannot continue the adapter:\n" + "\n".join(f"  - {p}" for p in problems))
    return resolve_model_dir(parent.base_model, log=log), model_versions.local_dir(parent)


def parent_replay_source(parent: ModelVersion) -> tuple[DatasetVersion, str | None]:
    """(dataset version, split) that trained ``parent``, from its lineage (data.mix_dataset=parent).

    The split is the parent run's data.train_split (None: every row). Raises OikyoError, worded as a
    problem line, when the lineage names no dataset version or it can no longer be replayed.
    """
    from oikyo.data import versions

    lineage = parent.lineage or {}
    dataset_id = lineage.get("dataset_version")
    if not dataset_id:
        raise OikyoError(f"data.mix_dataset: parent replays the data that trained {parent.id}, but its lineage "
                         "names no dataset version; set data.mix_dataset to a dataset version instead")
    try:
        version = versions.resolve(dataset_id)
    except OikyoError as error:
        raise OikyoError(f"data.mix_dataset: the dataset version that trained {parent.id}: {error}") from None
    if version.kind != "conversations":
        raise OikyoError(f"data.mix_dataset: {parent.id} was trained on {version.name}@{version.id}, which holds "
                         f"{version.kind} rows; replay needs conversations")
    split = ((lineage.get("config") or {}).get("data") or {}).get("train_split", "train")
    if split and not (version.splits or {}).get(split):
        raise OikyoError(f"data.mix_dataset: {version.name}@{version.id}, which trained {parent.id}, has no "
                         f"{split!r} rows to replay")
    if not versions.parquet_path(version).is_file():
        raise OikyoError(f"data.mix_dataset: the data file of {version.name}@{version.id} (that trained {parent.id}) "
                         f"is missing from the artifact store")
    return version, split


def parent_replay(config: Any):
    """The replay rows of ``data.mix_dataset: parent`` with what the model version records about them."""
    from oikyo.data.replay import load_dataset_replay
    from oikyo.jobs import model_versions

    parent = model_versions.get(config.model.name)
    version, split = parent_replay_source(parent)
    return load_dataset_replay(version, split=split, lineage={"source": "parent", "parent_model_version": parent.id,
                                                              "share": config.data.mix})


def _splits_of(config: Any) -> dict[str, str | None]:
    return {field: getattr(config.data, field, None) for field in ("train_split", "eval_split")}


def _reference_problems(dataset: Any, model: Any, *, splits: dict[str, Any], log: Callable[[str], None] | None = None
                        ) -> tuple[list[str], DatasetVersion | None, Path | None]:
    """Problems with a config's dataset (and its splits) and base model, with what did resolve."""
    from oikyo.data import versions

    problems: list[str] = []
    version = model_dir = None
    if not dataset:
        problems.append("data.dataset: no dataset given; pass --dataset NAME or set data.dataset "
                        "(`oikyo data list` shows the versions)")
    elif isinstance(dataset, str):
        try:
            version = versions.resolve(dataset)
        except OikyoError as error:
            problems.append(f"data.dataset: {error}")
    if version is not None:
        problems += _split_problems(splits, version)
        if not versions.parquet_path(version).is_file():
            problems.append(f"data.dataset: the data file of {version.name}@{version.id} is missing from "
                            f"the artifact store ({versions.parquet_path(version)})")
    if isinstance(model, str) and model:
        try:
            model_dir = (model_version_dir(model, log=log, merge=False) if is_model_version_ref(model)
                         else resolve_model_dir(model, log=log))
        except OikyoError as error:
            problems.append(f"model.name: {error}")
    return problems, version, model_dir


# The dataset kinds each training method reads (methods not listed are not checked here).
METHOD_KINDS = {
    "sft": ("conversations", "text"),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "kto": ("unpaired_preference",),
    "pretrain": ("text",),
    "grpo": ("conversations",),  # prompts, with the last assistant turn as the reference answer
}


def method_kind_problems(method: str | None, version: DatasetVersion) -> list[str]:
    """A problem line when ``method`` cannot train on ``version``'s kind of rows (before anything is queued)."""
    kinds = METHOD_KINDS.get(method or "")
    kind = getattr(version, "kind", None)
    if not kinds or not kind or kind in kinds:
        return []
    users = sorted(m for m, ks in METHOD_KINDS.items() if kind in ks)
    hint = f"; {kind} data trains with method.name={' or '.join(users)}" if users else ""
    return [f"data.dataset: {version.name}@{version.id} holds {kind} rows, but method {method} trains on "
            f"{' or '.join(kinds)} rows{hint}"]


def _split_problems(splits: dict[str, Any], version: DatasetVersion) -> list[str]:
    problems = []
    for field, split in splits.items():
        if not split or not isinstance(split, str):
            continue
        if not version.splits:
            problems.append(f"data.{field}: dataset {version.name}@{version.id} is not split; run "
                            f"`oikyo data split {version.name}` first, or set data.{field} to null")
        elif not version.splits.get(split):
            have = ", ".join(f"{k} ({n} rows)" for k, n in version.splits.items()) or "none"
            problems.append(f"data.{field}: dataset {version.name}@{version.id} has no {split!r} rows (it has {have})")
    return problems


def submit_training(config_path: str | Path | None = None, overrides: Iterable[str] = (), *,
                    dataset: str | None = None, model: str | None = None, name: str | None = None,
                    log: Callable[[str], None] | None = None) -> Run:
    """Validate, resolve and queue a training run; returns the queued run."""
    return enqueue(prepare(config_path, overrides, dataset=dataset, model=model, name=name, log=log))


def prepare_config(config: dict, *, name: str | None = None, log: Callable[[str], None] | None = None) -> PreparedRun:
    """Like :func:`prepare`, for a config given as a mapping in the YAML's structure (the REST API's form).

    Every problem is reported at once: the config's own (bad values, unknown keys, conflicts) and,
    as far as they can be read from it, its dataset and base model references. Raises
    :class:`oikyo.train.config.ConfigError` or :class:`SubmitError`, both with ``problems``.
    """
    rec = recipe()
    config_obj, problems = _validate_mapping(rec, config)
    if config_obj is not None:
        return _pin(rec, config_obj, name=name, log=log)
    from oikyo.train.config import ConfigError

    raw = config if isinstance(config, dict) else {}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    splits = {"train_split": data.get("train_split", "train"), "eval_split": data.get("eval_split", "validation")}
    more, _version, _model_dir = _reference_problems(data.get("dataset"), model.get("name", "smollm2-135m-instruct"),
                                                     splits=splits, log=log)
    known = {p.split(":", 1)[0] for p in problems}
    raise ConfigError(problems + [p for p in more if p.split(":", 1)[0] not in known])


def submit_config(config: dict, *, name: str | None = None, log: Callable[[str], None] | None = None) -> Run:
    """Validate, resolve and queue a training run from a config mapping; returns the queued run."""
    return enqueue(prepare_config(config, name=name, log=log))


def _validate_mapping(rec: Recipe, config: Any) -> tuple[Any, list[str]]:
    """(TrainConfig, []) for a valid mapping, else (None, every problem as "dotted.path: message")."""
    from pydantic import ValidationError

    from oikyo.train.config import ConfigError, format_validation_error

    if not isinstance(config, dict):
        return None, ["config: must be a mapping of groups (model, data, method, lora, train, dpo, checkpoint)"]
    try:
        return rec.parse(config), []
    except ValidationError as error:
        return None, format_validation_error(error)
    except ConfigError as error:
        return None, list(error.problems)


def validate_config(config: dict) -> Any:
    """The config mapping as a TrainConfig with every default filled in (references are not resolved).

    Raises :class:`oikyo.train.config.ConfigError` listing every problem.
    """
    from oikyo.train.config import ConfigError

    config_obj, problems = _validate_mapping(recipe(), config)
    if problems:
        raise ConfigError(problems)
    return config_obj


def config_yaml(config: dict) -> str:
    """The validated config as the YAML ``oikyo train --config`` reads, every knob with its description."""
    from oikyo.train.config import dump_yaml

    return dump_yaml(validate_config(config), header="Run it with: oikyo train --config run.yaml")


def config_schema() -> dict:
    """The training config's JSON schema (groups, fields, types, bounds, descriptions) and its defaults."""
    from oikyo.train.config import TrainConfig

    return {"schema": TrainConfig.model_json_schema(), "defaults": TrainConfig().model_dump(mode="json")}


def enqueue(prepared: PreparedRun, *, reproduced_from: str | None = None, study_id: str | None = None,
            trial_number: int | None = None) -> Run:
    """Write the run folder with its resolved config, then queue the run (tagged with its tuning trial, if any)."""
    import yaml

    from oikyo.jobs import queue

    run_id = queue.new_run_id()
    run_dir = workspace.subdir("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    tmp = run_dir / f".config.yaml.{secrets.token_hex(4)}"
    tmp.write_text(yaml.safe_dump(prepared.config_dict, sort_keys=False, allow_unicode=True))
    tmp.replace(run_dir / "config.yaml")
    return queue.submit(name=prepared.name, config=prepared.config_dict, config_hash=prepared.config_hash,
                        base_model=str(prepared.base_model or prepared.config.model.name),
                        dataset_version_id=prepared.dataset.id,
                        seed=prepared.seed, run_id=run_id, run_dir=run_dir, reproduced_from=reproduced_from,
                        study_id=study_id, trial_number=trial_number)


def parse_recorded(rec: Recipe, run: Run) -> Any:
    """The run's recorded config as a TrainConfig; a readable "bad config" error when it no longer validates
    (another oikyo version, or hardware checks that fail on this machine)."""
    try:
        return rec.parse(run.config)
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError: reported as the reason
        raise SubmitError(f"bad config: the recorded config of {run.id} does not validate here:\n{error}") from None


def reproduce(run: Run) -> Run:
    """Queue a new run from ``run``'s recorded resolved config (same dataset version, same seed)."""
    rec = recipe()
    config = parse_recorded(rec, run)
    prepared = _pin(rec, config, name=f"{run.name}-repro"[:200])
    return enqueue(prepared, reproduced_from=run.id)


def execute(run: Run, *, on_metrics: Callable[[int, dict], None], should_stop: Callable[[], bool],
            log: Callable[[str], None]) -> Any:
    """Run the recipe for a claimed run; returns its TrainResult (raises what the recipe raises)."""
    from oikyo.data import versions

    rec = recipe()
    config = parse_recorded(rec, run)
    if run.dataset_version_id is None:
        raise OikyoError(f"run {run.id} has no dataset version")
    version = versions.resolve(run.dataset_version_id)
    if not versions.parquet_path(version).is_file():
        raise OikyoError(f"missing dataset: the data file of {version.name}@{version.id} is gone from the "
                         f"artifact store ({versions.parquet_path(version)})")
    more = {}  # only what a run needs, so a recipe without these arguments (OIKYO_RECIPE) still runs the rest
    if is_continue(config):
        model_dir, more["adapter_dir"] = continue_from(config, log=log)
        log(f"Continuing adapter version {config.model.name} on its base model ({model_dir})")
    else:
        model_dir = resolve_model_dir(str(config.model.name), log=log)
    if _replays_parent(config):
        more["replay"] = parent_replay(config)
    train_split = getattr(config.data, "train_split", None)
    eval_split = getattr(config.data, "eval_split", None)
    return rec.run_training(
        config, run_dir=Path(run.run_dir), model_dir=model_dir,
        train_rows=lambda: versions.iter_rows(version, split=train_split),
        eval_rows=(lambda: versions.iter_rows(version, split=eval_split)) if eval_split else None,
        on_metrics=on_metrics, should_stop=should_stop, log=log, **more,
    )


def merge(base_model: str, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge an adapter into its base model with the recipe's ``merge_adapter``."""
    rec = recipe()
    if rec.merge_adapter is None:
        raise OikyoError("this training recipe cannot merge adapters")
    return Path(rec.merge_adapter(resolve_model_dir(base_model), adapter_dir, out_dir))
