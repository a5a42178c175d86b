"""The evaluation runner: one model (and its baselines) on one dataset split, to stored evaluations.

An :class:`EvalSpec` says what to evaluate; :func:`prepare` resolves it (model, dataset version,
split, examples, metrics, overlap guard) and :func:`run_evaluation` runs every *system*:

- ``model``: what the user asked for (a fine-tuned model version, or a base model),
- ``base``: the fine-tuned model's base model, same prompts (skipped with ``baselines=False``),
- ``few_shot``: the base model with ``few_shot_k`` training examples as prior turns, drawn once with
  ``few_shot_seed`` from the dataset's train split (or the model's own training data): what
  prompting alone achieves, so the comparison shows what fine-tuning bought beyond it.

Each system generates its answers through the shared engine (greedy by default, batched) and,
except few-shot, gets the teacher-forced loss of the reference answers. The forgetting probe runs on
the model and its base. The result is one :class:`oikyo.store.models.Evaluation` per system with
exact model version, dataset version, split, metric versions and generation settings::

    spec = EvalSpec(model="mv-1a2b", dataset="3f9c0a1b2c3d", split="test")
    records = run_evaluation(spec, group_id="run-...", progress=lambda done, total, phase: ...)

Systems already evaluated by an interrupted attempt are read back from ``cache_dir`` (a job's
folder), so a resumed job does not generate them again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from oikyo import workspace
from oikyo.errors import OikyoError
from oikyo.evaluate import forgetting as probing
from oikyo.evaluate import metrics as registry
from oikyo.evaluate import records
from oikyo.evaluate.backend import GenerationSettings, ModelBackend
from oikyo.evaluate.examples import Example, choose_shots, few_shot_messages, load_examples
from oikyo.evaluate.guards import enforce, find_overlap
from oikyo.evaluate.targets import Target, resolve_target
from oikyo.store.models import Evaluation, utcnow

Progress = Callable[[int, int, str], None]  # (done, total, phase)
MAX_AUTO_NEW_TOKENS = 512


@dataclass
class EvalSpec:
    """Everything that decides an evaluation's result (stored as the job's config)."""

    model: str
    dataset: str | None = None  # dataset version reference; default: the model's own training dataset
    split: str | None = "test"
    metrics: list[str] | None = None  # None: chosen from the references (metrics.auto_metrics)
    metric_modules: list[str] = field(default_factory=list)
    limit: int | None = None
    max_new_tokens: int | None = None  # None: 1.25 x the longest reference + 8 tokens
    batch_size: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    baselines: bool = True
    few_shot_k: int = 3
    few_shot_seed: int = 0
    probe: bool = True
    forgetting_threshold: float = probing.DEFAULT_THRESHOLD
    force: bool = False
    target: dict | None = None  # the resolved model, pinned when the job is submitted

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass
class System:
    role: str
    model_dir: str  # the backend (base or full model folder) it runs on
    adapter: str | None
    few_shot: bool = False


@dataclass
class Prepared:
    """A resolved spec: ready to run."""

    spec: EvalSpec
    target: Target
    dataset_id: str
    dataset_name: str
    split: str | None
    examples: list[Example]
    metric_names: list[str]
    settings: GenerationSettings
    systems: list[System]
    shots: list[Example]
    forced_overlap: bool
    overlap: dict | None
    notes: list[str] = field(default_factory=list)


def _split_of(version, split: str | None) -> str | None:
    if split is None:
        return None
    if not version.splits:
        raise OikyoError(f"{version.name}@{version.id} is not split; evaluate on every row with --split all, "
                         f"or split it first (`oikyo data split {version.name}`)")
    if not version.splits.get(split):
        have = ", ".join(f"{k} ({n})" for k, n in version.splits.items())
        raise OikyoError(f"{version.name}@{version.id} has no {split!r} rows (it has {have})")
    return split


def _metric_names(spec: EvalSpec, examples: list[Example]) -> list[str]:
    registry.load_modules(spec.metric_modules)
    text_only = all(e.kind == "text" for e in examples)
    if spec.metrics:
        for name in spec.metrics:
            registry.get(name)
        names = list(spec.metrics)
    elif text_only:
        names = ["loss", "perplexity"]
    else:
        prof = registry.profile([e.reference for e in examples], [e.label for e in examples])
        names = registry.auto_metrics(prof)
    if text_only and any(registry.get(n).input == "text" for n in names):
        raise OikyoError("this dataset holds plain text (no answers to generate): only loss and perplexity apply")
    return names


def _max_new_tokens(spec: EvalSpec, tokenizer, examples: list[Example]) -> int:
    if spec.max_new_tokens:
        return spec.max_new_tokens
    longest = max((len(tokenizer(e.reference, add_special_tokens=False)["input_ids"]) for e in examples), default=16)
    return max(16, min(MAX_AUTO_NEW_TOKENS, math.ceil(longest * 1.25) + 8))


def _model_dirs(target: Target) -> tuple[str, str]:
    """(folder the model runs on, folder of its base model).

    The base of a model trained from a model version (``base_model`` ``mv-...``) is that version's
    folder (merged once when it is an adapter), so the baseline is the model the run started from.
    """
    from oikyo.jobs.training import resolve_model_dir

    base_dir = str(resolve_model_dir(target.base_model))
    return (_target_dir(target) if target.kind in ("full", "merged") else base_dir), base_dir


def _target_dir(target: Target) -> str:
    """The evaluated model version's folder on this machine (fetched from the shared artifact store
    when the job runs on another machine than the one that trained it)."""
    if not target.model_version_id:
        return target.path
    from oikyo.jobs import model_versions

    mv = model_versions.get(target.model_version_id)
    return str(model_versions.local_dir(mv)) if model_versions.is_available(mv) else target.path


def _systems(spec: EvalSpec, target: Target, text_only: bool) -> list[System]:
    model_dir, base_dir = _model_dirs(target)
    systems = [System("model", model_dir, "model" if target.kind == "adapter" else None)]
    if spec.baselines and not target.is_base:
        systems.append(System("base", base_dir, None))
        if spec.few_shot_k > 0 and not text_only:
            systems.append(System("few_shot", base_dir, None, few_shot=True))
    return systems


def _shot_rows(version, target: Target):
    """The rows few-shot examples are drawn from: this dataset's train split, else the model's training data."""
    from oikyo.data import versions

    if version.splits and version.splits.get("train"):
        return versions.iter_rows(version, split="train")
    if target.training_dataset:
        trained = versions.resolve(target.training_dataset)
        return versions.iter_rows(trained, split=target.training_split if trained.splits else None)
    return iter(())


def prepare(spec: EvalSpec, tokenizer=None) -> Prepared:
    """Resolve the model, dataset and split, load the examples, pick metrics and run the overlap guard."""
    from oikyo.data import versions
    from oikyo.models.chat_template import cached_tokenizer

    target = Target.from_dict(spec.target) if spec.target else resolve_target(spec.model)
    dataset_ref = spec.dataset or target.training_dataset
    if not dataset_ref:
        raise OikyoError(f"{target.label} is a base model: name the data to evaluate on with --dataset VERSION[:split]")
    version = versions.resolve(dataset_ref)
    split = _split_of(version, spec.split)
    examples = load_examples(version, split, spec.limit)
    overlap = find_overlap(target, version.id, split, examples)
    forced = enforce(overlap, target, f"{version.name}@{version.id}", split, spec.force)
    names = _metric_names(spec, examples)
    text_only = all(e.kind == "text" for e in examples)
    systems = _systems(spec, target, text_only)
    tokenizer = tokenizer or cached_tokenizer(systems[0].model_dir)
    settings = GenerationSettings(max_new_tokens=_max_new_tokens(spec, tokenizer, examples),
                                  temperature=spec.temperature, top_p=spec.top_p, seed=spec.seed,
                                  batch_size=spec.batch_size)
    shots, notes = [], []
    if any(s.few_shot for s in systems):
        shots = choose_shots(_shot_rows(version, target), spec.few_shot_k, spec.few_shot_seed,
                             exclude={e.key for e in examples})
        if not shots:
            systems = [s for s in systems if not s.few_shot]
            notes.append("no training rows to draw few-shot examples from: the few-shot baseline was skipped")
    return Prepared(spec=spec, target=target, dataset_id=version.id, dataset_name=version.name, split=split,
                    examples=examples, metric_names=names, settings=settings, systems=systems, shots=shots,
                    forced_overlap=forced, overlap=overlap.to_dict() if overlap else None, notes=notes)


def total_work(prepared: Prepared) -> int:
    """Work items of the whole evaluation (prompts generated + examples scored), for progress."""
    n = len(prepared.examples)
    teacher = any(registry.get(m).input == "nll" for m in prepared.metric_names)
    generates = any(registry.get(m).input == "text" for m in prepared.metric_names)
    total = 0
    for system in prepared.systems:
        total += n if generates else 0
        total += n if teacher and not system.few_shot else 0
    if _runs_probe(prepared):
        total += 2 * probing.probe_size()
    return total


def _runs_probe(prepared: Prepared) -> bool:
    return prepared.spec.probe and not prepared.target.is_base and any(s.role == "base" for s in prepared.systems)


class _Counter:
    def __init__(self, total: int, progress: Progress | None):
        self.done, self.total, self.progress, self.phase = 0, total, progress, ""

    def phase_to(self, phase: str) -> None:
        self.phase = phase
        if self.progress:
            self.progress(self.done, self.total, phase)

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total, self.phase)


class _Backends:
    """Backends by model folder, loaded on first use (a base model and its adapter share one)."""

    def __init__(self, prepared: Prepared):
        self.prepared, self.loaded = prepared, {}

    def get(self, system: System) -> ModelBackend:
        if system.model_dir not in self.loaded:
            backend = ModelBackend(system.model_dir, batch_size=self.prepared.settings.batch_size)
            if self.prepared.target.kind == "adapter" and system.model_dir == _model_dirs(self.prepared.target)[1]:
                backend.add_adapter("model", _target_dir(self.prepared.target))
            self.loaded[system.model_dir] = backend
        return self.loaded[system.model_dir]


def _prompts(prepared: Prepared, system: System, tokenizer) -> list[list[int]]:
    from oikyo.models.chat_template import encode_prompt

    if system.few_shot:
        return [encode_prompt(tokenizer, few_shot_messages(e, prepared.shots), tools=e.tools) for e in prepared.examples]
    return [encode_prompt(tokenizer, e.prompt, tools=e.tools) for e in prepared.examples]


def _encoded(prepared: Prepared, tokenizer) -> list:
    from oikyo.models.chat_template import encode_conversation, encode_text

    return [encode_text(tokenizer, e.reference) if e.kind == "text"
            else encode_conversation(tokenizer, e.row["messages"], tools=e.tools) for e in prepared.examples]


def _run_system(prepared: Prepared, system: System, backends: _Backends, counter: _Counter, should_stop,
                cache: Path | None) -> dict:
    """Predictions and teacher-forced statistics of one system (read from ``cache`` when already done)."""
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("digest") == prepared.spec.digest():
            counter(cached["work"])
            return cached
    backend = backends.get(system)
    inputs = {registry.get(m).input for m in prepared.metric_names}
    out: dict = {"predictions": None, "nll": None, "tokens": None, "work": 0}
    if "text" in inputs:
        counter.phase_to(f"{system.role}: generating")
        out["predictions"] = backend.generate(_prompts(prepared, system, backend.tokenizer), adapter=system.adapter,
                                              settings=prepared.settings, progress=counter, should_stop=should_stop)
        out["work"] += len(prepared.examples)
    if "nll" in inputs and not system.few_shot:
        counter.phase_to(f"{system.role}: scoring the references")
        out["nll"], out["tokens"] = backend.nll(_encoded(prepared, backend.tokenizer), adapter=system.adapter,
                                                progress=counter, should_stop=should_stop)
        out["work"] += len(prepared.examples)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({**out, "digest": prepared.spec.digest()}))
        tmp.replace(cache)
    return out


def score(metric_names: list[str], examples: list[Example], output: dict) -> tuple[dict, dict, dict]:
    """(values, per-example scores, per-example stats) of every metric that applies to ``output``."""
    references = [e.reference for e in examples]
    values, scores, stats = {}, {}, {}
    for name in metric_names:
        metric = registry.get(name)
        if metric.input == "nll":
            if output.get("nll") is None:
                continue
            result = metric.fn(output["nll"], output["tokens"])
        else:
            if output.get("predictions") is None:
                continue
            result = metric.score(output["predictions"], references)
        values[name], scores[name], stats[name] = result.value, result.scores, result.stats
    return values, scores, stats


def _example_rows(examples: list[Example], output: dict, scores: dict, stats: dict) -> list[dict]:
    rows = []
    for k, e in enumerate(examples):
        rows.append({
            "index": e.index, "key": e.key, "question": e.question, "reference": e.reference,
            "prediction": output["predictions"][k] if output.get("predictions") is not None else None,
            "nll": output["nll"][k] if output.get("nll") is not None else None,
            "tokens": output["tokens"][k] if output.get("tokens") is not None else None,
            "scores": {m: s[k] for m, s in scores.items()},
            "stats": {m: [float(x) for x in st[k]] for m, st in stats.items()},
        })
    return rows


def _record(prepared: Prepared, system: System, output: dict, *, group_id: str, run_id: str | None) -> Evaluation:
    target = prepared.target
    values, scores, stats = score(prepared.metric_names, prepared.examples, output)
    key = records.write_examples(_example_rows(prepared.examples, output, scores, stats))
    settings = {"limit": prepared.spec.limit, "examples": len(prepared.examples),
                "metric_modules": prepared.spec.metric_modules, "target_kind": target.kind if system.role == "model"
                else "base", "notes": prepared.notes}
    if system.few_shot:
        settings["few_shot"] = {"k": len(prepared.shots), "seed": prepared.spec.few_shot_seed,
                                "shots": [s.key for s in prepared.shots]}
    is_model = system.role == "model"
    return Evaluation(
        id=records.new_id(), group_id=group_id, run_id=run_id, role=system.role,
        model_ref=prepared.spec.model if is_model else target.base_model,
        model_version_id=target.model_version_id if is_model else None, base_model=target.base_model,
        dataset_version_id=prepared.dataset_id, split=prepared.split, rows=len(prepared.examples), metrics=values,
        metric_versions=registry.versions(list(values)), generation=prepared.settings.to_dict(), settings=settings,
        forced_overlap=prepared.forced_overlap if is_model else False, overlap=prepared.overlap if is_model else None,
        artifact=key, created_at=utcnow(),
    )


def _base_probe_cache(model_dir: str, batch_size: int) -> Path:
    """Where the base model's probe result is kept: one file per (weights on disk, probe version, batch size).

    The probe is greedy and the base model does not change, so every evaluation with the probe
    (each trial of a tuning study that scores forgetting, every quickstart) would otherwise run the
    same base-model probe again. The key hashes the folder's weight and config files' names, sizes
    and modification times: a model rewritten in place gets a new key.
    """
    folder = Path(model_dir).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                   if p.is_file() and (p.suffix in (".safetensors", ".json") or p.name == "tokenizer.model"))
    key = hashlib.sha256(json.dumps([str(folder), files, probing.PROBE_VERSION, batch_size]).encode()).hexdigest()
    return workspace.subdir("cache") / "probe" / f"{key[:32]}.json"


def _run_probe_for(prepared: Prepared, system: System, backends: _Backends, counter: _Counter, should_stop) -> dict:
    def run() -> dict:
        return probing.run_probe(backends.get(system), system.adapter, batch_size=prepared.settings.batch_size,
                                 progress=counter, should_stop=should_stop)

    if system.role != "base" or system.adapter is not None:
        return run()
    cache = _base_probe_cache(system.model_dir, prepared.settings.batch_size)
    if cache.is_file():
        try:
            found = json.loads(cache.read_text(encoding="utf-8"))
            counter(probing.probe_size())
            return found
        except (OSError, ValueError):
            pass  # unreadable: measure again and overwrite
    result = run()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(cache)
    return result


def _probe(prepared: Prepared, backends: _Backends, counter: _Counter, should_stop) -> dict:
    results = {}
    for system in prepared.systems:
        if system.role in ("model", "base"):
            counter.phase_to(f"{system.role}: forgetting probe")
            results[system.role] = _run_probe_for(prepared, system, backends, counter, should_stop)
    summary = probing.forgetting(results["base"], results["model"], prepared.spec.forgetting_threshold)
    summary["items_artifact"] = records.write_examples(
        [{"role": role, **item} for role, result in results.items() for item in result["items"]]
        + [{"role": role, "kind": "open", **item} for role, result in results.items() for item in result["open_items"]])
    return summary


def run_evaluation(spec: EvalSpec | Prepared, *, group_id: str | None = None, run_id: str | None = None,
                   progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                   cache_dir: Path | None = None, log: Callable[[str], None] | None = None) -> list[Evaluation]:
    """Evaluate every system of ``spec``; returns the (not yet stored) evaluation records, model first."""
    prepared = spec if isinstance(spec, Prepared) else prepare(spec)
    group_id = group_id or run_id or f"eg-{records.new_id()[3:]}"
    counter = _Counter(total_work(prepared), progress)
    backends = _Backends(prepared)
    say = log or (lambda message: None)
    for note in prepared.notes:
        say(note)
    out = []
    for system in prepared.systems:
        say(f"evaluating {system.role} on {len(prepared.examples)} examples of "
            f"{prepared.dataset_name}@{prepared.dataset_id}{':' + prepared.split if prepared.split else ''}")
        cache = cache_dir / f"{system.role}.json" if cache_dir is not None else None
        output = _run_system(prepared, system, backends, counter, should_stop, cache)
        out.append(_record(prepared, system, output, group_id=group_id, run_id=run_id))
    if _runs_probe(prepared):
        out[0].forgetting = _probe(prepared, backends, counter, should_stop)
    counter.phase_to("done")
    return out
