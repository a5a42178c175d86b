"""Search spaces for ``oikyo tune``: which config keys a study varies, over which ranges.

A space is a set of :class:`Param` objects, each named by the training-config key it sets
(dotted, any field of :class:`oikyo.train.config.TrainConfig`: ``train.lr``, ``lora.dropout``,
``train.max_steps``, ``data.mix``, ...), plus *derived* keys the space resolves itself:

    lora.alpha_ratio    lora.alpha = lora.rank x ratio (the rank from the space, else the base config)

Kinds: ``float`` (low, high, optional log or step), ``int`` (low, high, optional log or step) and
``categorical`` (choices). A space file is YAML (see src/oikyo/configs/space-lora.yaml)::

    params:
      train.lr: {type: float, low: 1.0e-5, high: 5.0e-4, log: true}
      lora.rank: {type: categorical, choices: [8, 16, 32, 64]}
      lora.alpha_ratio: {type: categorical, choices: [1.0, 2.0, 4.0]}
      train.max_steps: {type: int, low: 20, high: 200, step: 10}

Usage::

    from oikyo.tune.space import load_space
    space = load_space("space.yaml")           # None: default_space(), the LoRA space below
    values = space.suggest(trial)              # {"train.lr": 1e-4, "lora.rank": 16, "lora.alpha_ratio": 2.0}
    overrides = space.overrides(values)        # ["train.lr=0.0001", "lora.rank=16", "lora.alpha=32.0"]
    space.check_against(base_config_dict)      # [] when every extreme of every param validates

Overrides use the ``--set dotted.key=value`` syntax of ``oikyo train`` and
:func:`oikyo.jobs.training.prepare`; floats are written so YAML reads them back as floats
(``1.0e-05``, never ``1e-05``, which YAML 1.1 reads as a string).

Every problem of a space (unknown key with the nearest known one, unknown type, missing or extra
fields, low >= high, log with low <= 0, empty or mixed choices, a step that does not divide the
range, a value the config schema rejects, a file that is missing or not a mapping) is collected
and raised once as :class:`SpaceError`, one "param: message" line each, the file in the header.
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oikyo.errors import OikyoError

KINDS = ("float", "int", "categorical")
_FIELDS = {  # the fields each kind takes: (required, optional)
    "float": ({"type", "low", "high"}, {"log", "step"}),
    "int": ({"type", "low", "high"}, {"log", "step"}),
    "categorical": ({"type", "choices"}, set()),
}


@dataclass(frozen=True)
class Derived:
    """A key the space resolves into a real config key: ``target = base x value``."""

    target: str
    base: str
    description: str


DERIVED = {
    "lora.alpha_ratio": Derived("lora.alpha", "lora.rank", "lora.alpha = lora.rank x alpha_ratio"),
}


class SpaceError(OikyoError):
    """The search space has problems; ``problems`` lists every one, "param: message" each."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        where = f" {source}" if source else ""
        header = f"Invalid search space{where} ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([header, *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class Param:
    """One searched config key: a float or int range, or a list of choices."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def to_dict(self) -> dict:
        """The param's fields as in a space file (its name is the key it sits under)."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def extremes(self) -> list:
        """The values that bound the param: low and high, or every choice."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def distribution(self):
        """The optuna distribution of the param."""
        import optuna.distributions as d

        if self.type == "categorical":
            return d.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log,
                                   step=None if self.step is None else float(self.step))

    def suggest(self, trial) -> Any:
        """Draw this param's value for an optuna trial."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log,
                                   step=None if self.step is None else float(self.step))


@dataclass(frozen=True)
class Space:
    """A validated search space (build it with :func:`load_space`, :func:`default_space` or :meth:`from_dict`)."""

    params: tuple[Param, ...]
    source: str | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def to_dict(self) -> dict:
        """JSON-ready form, the same as a space file's: ``{"params": {name: {...}}}``."""
        return {"params": {p.name: p.to_dict() for p in self.params}}

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Space:
        """A space from its dict form (a loaded space file, or a study's recorded space); raises SpaceError."""
        problems: list[str] = []
        params = _parse_params(data, problems)
        problems += _relation_problems(params)
        checkable = [p for p in params if p.name in _known_keys() and not _whole_number_mismatch(p)
                     and not (p.name in DERIVED and any(line.startswith(f"{p.name}: ") for line in problems))]
        problems += _schema_problems(checkable)
        if problems:
            raise SpaceError(problems, source)
        return cls(tuple(params), source=source)

    def distributions(self) -> dict:
        """``{name: optuna distribution}``, e.g. for a grid or ``study.enqueue_trial``."""
        return {p.name: p.distribution() for p in self.params}

    def suggest(self, trial) -> dict[str, Any]:
        """One value per param, drawn by an optuna trial: ``{"train.lr": 1e-4, "lora.rank": 16, ...}``."""
        return {p.name: p.suggest(trial) for p in self.params}

    def resolve(self, values: dict[str, Any], base: Any = None) -> dict[str, Any]:
        """``values`` as real config keys, derived keys resolved (``lora.alpha_ratio`` -> ``lora.alpha``).

        ``base`` (a config mapping or TrainConfig) gives a derived key's base when the space does not
        search it (alpha_ratio without lora.rank); otherwise the schema's default is used.
        """
        resolved = {}
        for name, value in values.items():
            derived = DERIVED.get(name)
            if derived is None:
                resolved[name] = value
                continue
            base_value = values[derived.base] if derived.base in values else _base_value(base, derived.base)
            resolved[derived.target] = float(base_value) * float(value)
        return resolved

    def config_for(self, values: dict[str, Any], base: dict) -> dict:
        """The config mapping a trial of ``values`` trains with: ``base`` with ``values`` resolved on top."""
        return _with_overrides(base or {}, self.resolve(values, base))

    def overrides(self, values: dict[str, Any], base: Any = None) -> list[str]:
        """``values`` as ``--set`` overrides: ``["train.lr=0.0001", "lora.rank=16", "lora.alpha=32.0"]``.

        Derived keys are resolved (see :meth:`resolve`; pass ``base`` when the space varies
        lora.alpha_ratio but not lora.rank and the base config sets its own rank).
        """
        return [f"{key}={yaml_value(value)}" for key, value in self.resolve(values, base).items()]

    def check_against(self, base_config: dict | None) -> list[str]:
        """Problems of this space on top of ``base_config`` (a config mapping as in the YAML, or a TrainConfig).

        [] when the base config with each extreme of every param (one at a time, the others as in
        the base) validates with :func:`oikyo.jobs.training.validate_config`; else one
        "param: message" line per rejected value, and a line for a param the base makes useless
        (train.warmup_ratio when train.warmup_steps is set, train.epochs when train.max_steps is).
        """
        from oikyo.jobs.training import validate_config
        from oikyo.train.config import ConfigError

        if hasattr(base_config, "model_dump"):  # a TrainConfig
            base_config = base_config.model_dump(mode="json")
        base = dict(base_config or {})
        problems: list[str] = []
        try:
            resolved_base = validate_config(base)
        except ConfigError as error:
            return [f"base config: {p}" for p in error.problems]
        for name, values in ((p.name, p.extremes()) for p in self.params):
            for value in values:
                config = _with_overrides(base, self.resolve({name: value, **_partner(self, name, value)}, base))
                try:
                    validate_config(config)
                except ConfigError as error:
                    problems += [f"{name}: {_show(value)} is rejected by the config: {p}" for p in error.problems]
        return _dedupe(problems + _useless_problems(self, resolved_base))


def _partner(space: Space, name: str, value: Any) -> dict:
    """For a derived key, its base param's extremes are paired with it (smallest x smallest ...)."""
    derived = DERIVED.get(name)
    if derived is None or derived.base not in space.names:
        return {}
    base_extremes = sorted(v for v in space[derived.base].extremes() if _is_number(v, "float"))
    ratios = sorted(v for v in space[name].extremes() if _is_number(v, "float"))
    if not base_extremes or not ratios:
        return {}  # reported by the checks of those params
    return {derived.base: base_extremes[0] if value == ratios[0] else base_extremes[-1]}


# Keys that have no effect while another key is set (train.max_steps overrides train.epochs, ...).
OVERRIDDEN_BY = {"train.epochs": "train.max_steps", "train.warmup_ratio": "train.warmup_steps"}


def _useless_problems(space: Space, config: Any) -> list[str]:
    """Params the base config makes useless: overridden by a key it sets, or LoRA knobs of a full fine-tune."""
    problems = []
    for name, winner in OVERRIDDEN_BY.items():
        group, _, field_name = winner.partition(".")
        if name in space.names and winner not in space.names and \
                getattr(getattr(config, group, None), field_name, None) is not None:
            problems.append(f"{name}: has no effect: the base config sets {winner}, which overrides it "
                            f"(set {winner} to null, or search {winner})")
    finetune = getattr(getattr(config, "method", None), "finetune", None)
    lora = [n for n in space.names if n.startswith("lora.")]
    if finetune == "full" and lora:
        problems += [f"{n}: has no effect: the base config trains every weight (method.finetune full)" for n in lora]
    return problems


def _dedupe(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


# ----------------------------------------------------------------------------- loading


def load_space(path: str | Path | None = None) -> Space:
    """The space in YAML file ``path`` (None: :func:`default_space`); raises SpaceError listing every problem."""
    if path is None:
        return default_space()
    file = Path(path)
    if not file.is_file():
        raise SpaceError([f"{file}: space file not found"], str(file))
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise SpaceError([f"{file}: not valid YAML ({str(error).splitlines()[0]})"], str(file)) from None
    return Space.from_dict(data, source=str(file))


def default_space() -> Space:
    """The default LoRA space: learning rate, rank, alpha ratio, dropout, steps, warmup, batch size, replay share.

    ``data.mix`` is in it when this install's training config has that field.
    """
    from oikyo.train.config import DataSettings

    params = {
        "train.lr": {"type": "float", "low": 1.0e-5, "high": 5.0e-4, "log": True},
        "lora.rank": {"type": "categorical", "choices": [8, 16, 32, 64]},
        "lora.alpha_ratio": {"type": "categorical", "choices": [1.0, 2.0, 4.0]},
        "lora.dropout": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.01},
        "train.max_steps": {"type": "int", "low": 20, "high": 200, "step": 10},
        "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.02},
        "train.batch_size": {"type": "categorical", "choices": [4, 8, 16]},
    }
    if "mix" in DataSettings.model_fields:
        params["data.mix"] = {"type": "float", "low": 0.0, "high": 0.3, "step": 0.05}
    return Space.from_dict({"params": params}, source="the default LoRA space")


def _parse_params(data: Any, problems: list[str]) -> list[Param]:
    if not isinstance(data, dict):
        problems.append("space: the file must be a mapping with a params: mapping of config keys "
                        "(e.g. params: {train.lr: {type: float, low: 1.0e-5, high: 5.0e-4, log: true}})")
        return []
    for key in data:
        if key != "params":
            problems.append(f"{key}: unknown top-level key; a space file holds only params:")
    raw = data.get("params")
    if not isinstance(raw, dict) or not raw:
        problems.append("params: must be a non-empty mapping of config keys to {type: ..., ...}")
        return []
    known = _known_keys()
    params = []
    for name, spec in raw.items():
        name = str(name)
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(f"{name}: unknown config key{hint}")
        param = _parse_param(name, spec, problems)
        if param is not None:
            params.append(param)
    return params


def _parse_param(name: str, spec: Any, problems: list[str]) -> Param | None:
    """One param from its spec mapping, or None (with its problems appended)."""
    before = len(problems)
    if not isinstance(spec, dict):
        problems.append(f"{name}: must be a mapping such as {{type: float, low: 0.0, high: 0.1}}")
        return None
    kind = spec.get("type")
    if kind not in KINDS:
        got = "no type" if kind is None else f"type {kind!r}"
        problems.append(f"{name}: {got}; type must be one of {', '.join(KINDS)}")
        return None
    required, optional = _FIELDS[kind]
    for missing in sorted(required - set(spec)):
        problems.append(f"{name}: {kind} needs {missing}")
    for extra in sorted(set(spec) - required - optional):
        article = "an" if kind == "int" else "a"
        problems.append(f"{name}: {extra} is not a field of {article} {kind} param (it takes "
                        f"{', '.join(sorted((required | optional) - {'type'}))})")
    if kind == "categorical":
        choices = spec.get("choices")
        _check_choices(name, choices, problems)
        if len(problems) > before:
            return None
        return Param(name, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    _check_range(name, kind, low, high, log, step, problems)
    if len(problems) > before:
        return None
    return Param(name, kind, low=low, high=high, log=bool(log), step=step)


def _is_number(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind == "int" else isinstance(value, (int, float)) and math.isfinite(value)


def _check_range(name: str, kind: str, low: Any, high: Any, log: Any, step: Any, problems: list[str]) -> None:
    word = "an integer" if kind == "int" else "a number"
    numbers = True
    for label, value in (("low", low), ("high", high)):
        if value is not None and not _is_number(value, kind):
            problems.append(f"{name}: {label} must be {word} (got {value!r})")
            numbers = False
    if not isinstance(log, bool):
        problems.append(f"{name}: log must be true or false (got {log!r})")
        log = False
    if step is not None and (not _is_number(step, kind) or step <= 0):
        problems.append(f"{name}: step must be a positive {'integer' if kind == 'int' else 'number'} (got {step!r})")
        step = None
    if low is None or high is None or not numbers:
        return
    if low >= high:
        problems.append(f"{name}: low must be below high (got low {low}, high {high})")
        return
    if log and low <= 0:
        problems.append(f"{name}: a log range needs low > 0 (got low {low})")
    if log and step is not None:
        problems.append(f"{name}: log and step cannot be used together (optuna samples one or the other)")
    if step is not None and not _divides(high - low, step):
        problems.append(f"{name}: step {step} does not divide the range {low}..{high} "
                        f"(high - low must be a whole number of steps)")


def _divides(span: float, step: float) -> bool:
    count = span / step
    return abs(count - round(count)) <= 1e-9 * max(1.0, abs(count))


def _check_choices(name: str, choices: Any, problems: list[str]) -> None:
    if choices is None:
        return  # reported as missing
    if not isinstance(choices, list) or not choices:
        problems.append(f"{name}: choices must be a non-empty list (got {choices!r})")
        return
    kinds = {_choice_kind(c) for c in choices}
    if "other" in kinds:
        bad = next(c for c in choices if _choice_kind(c) == "other")
        problems.append(f"{name}: choices must be numbers, strings, true/false or null (got {bad!r})")
    elif len(kinds - {"null"}) > 1:
        problems.append(f"{name}: choices mix types ({', '.join(sorted(kinds))}); use one type, e.g. all numbers")
    if len({repr(c) for c in choices}) != len(choices):
        problems.append(f"{name}: choices repeat a value ({choices})")


def _choice_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _relation_problems(params: list[Param]) -> list[str]:
    """Problems between params: a derived key searched together with the key it sets, wrong kinds for a key."""
    problems = []
    names = {p.name for p in params}
    for param in params:
        bad = [v for v in param.extremes() if not (_is_number(v, "float") and v > 0)] if param.name in DERIVED else []
        if bad:
            problems.append(f"{param.name}: every value must be a positive number, as "
                            f"{DERIVED[param.name].description} (got {', '.join(yaml_value(v) for v in bad)})")
    for name, derived in DERIVED.items():
        if name in names and derived.target in names:
            problems.append(f"{name}: sets {derived.target} ({derived.description}), which the space also "
                            f"searches; keep one of the two")
    for name, winner in OVERRIDDEN_BY.items():
        if name in names and winner in names and None not in _by_name(params, winner).extremes():
            problems.append(f"{name}: has no effect: the space also searches {winner}, which overrides it "
                            f"(search one of the two, or add null to {winner}'s choices)")
    for param in params:
        if _whole_number_mismatch(param):
            problems.append(f"{param.name}: is a whole-number setting; use type int (or categorical)")
    return problems


def _by_name(params: list[Param], name: str) -> Param:
    return next(p for p in params if p.name == name)


def _whole_number_mismatch(param: Param) -> bool:
    return param.type == "float" and _whole_number_field(param.name)


def _schema_problems(params: list[Param]) -> list[str]:
    """Values the config schema rejects (each extreme on the default config, e.g. train.lr above 1)."""
    from pydantic import ValidationError

    from oikyo.train.config import ConfigError, TrainConfig, format_validation_error

    space = Space(tuple(params))
    problems = []
    for param in params:
        for value in param.extremes():
            raw: dict = {}
            for key, resolved in space.resolve({param.name: value, **_partner(space, param.name, value)}).items():
                _set(raw, key, resolved)
            try:
                TrainConfig.model_validate(raw)
            except ValidationError as error:
                problems += [f"{param.name}: {_show(value)} is outside what the config accepts: {line}"
                             for line in format_validation_error(error)]
            except ConfigError as error:
                problems += [f"{param.name}: {_show(value)}: {line}" for line in error.problems]
    return _dedupe(problems)


# ----------------------------------------------------------------------------- config keys


def _known_keys() -> set[str]:
    from oikyo.train.config import TrainConfig

    keys = {f"{group}.{name}" for group, info in TrainConfig.model_fields.items()
            for name in info.annotation.model_fields}  # type: ignore[union-attr]
    return keys | set(DERIVED)


def _whole_number_field(key: str) -> bool:
    """Whether config key ``key`` takes integers but not fractions (e.g. train.batch_size)."""
    from oikyo.train.config import TrainConfig

    group, _, name = key.partition(".")
    info = TrainConfig.model_fields.get(group)
    fields = getattr(getattr(info, "annotation", None), "model_fields", {})
    if name not in fields:
        return False
    types = _flatten(fields[name].annotation)
    return int in types and float not in types


def _flatten(annotation: Any) -> set:
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    out: set = set()
    for arg in args:
        out |= _flatten(arg)
    return out


def _base_value(base: Any, key: str) -> Any:
    """``key``'s value in a base config (mapping or TrainConfig), else the schema's default."""
    from oikyo.train.config import TrainConfig

    group, _, name = key.partition(".")
    if isinstance(base, dict):
        section = base.get(group)
        if isinstance(section, dict) and section.get(name) is not None:
            return section[name]
    elif base is not None and getattr(getattr(base, group, None), name, None) is not None:
        return getattr(getattr(base, group), name)
    return getattr(getattr(TrainConfig(), group), name)


def _set(raw: dict, key: str, value: Any) -> None:
    group, _, name = key.partition(".")
    section = raw.setdefault(group, {})
    if isinstance(section, dict):
        section[name] = value


def _with_overrides(base: dict, values: dict[str, Any]) -> dict:
    out = {group: dict(section) if isinstance(section, dict) else section for group, section in base.items()}
    for key, value in values.items():
        group = key.partition(".")[0]
        if not isinstance(out.get(group), dict):
            out[group] = {}
        _set(out, key, value)
    return out


def _show(value: Any) -> str:
    return yaml_value(value)


def yaml_value(value: Any) -> str:
    """A value as the YAML scalar an override carries; floats always read back as floats."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)  # PyYAML (YAML 1.1) reads "1e-05" as a string: write "1.0e-05"
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
