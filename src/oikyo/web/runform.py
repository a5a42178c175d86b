"""The "new run" form, generated from the training config schema so it maps one-to-one onto the YAML.

Every group of :class:`oikyo.train.config.TrainConfig` (model, data, method, lora, train, dpo, grpo,
kto, orpo, checkpoint) becomes a fieldset and every field an input named by its dotted path (``train.lr``),
with the field's default, description and bounds. The page's JavaScript reads the inputs back into
the same nested structure as the YAML file and sends it to ``POST /api/v1/config/yaml`` (live
preview) and ``POST /api/v1/runs`` (start); validation stays in the config model.

    groups = form_groups()     # [{"name": "train", "doc": ..., "fields": [{"path": "train.lr", "kind": "float", ...}]}]
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Input kinds the page knows how to read back: int/float (number inputs), bool (checkbox),
# choice (select over a Literal), multi (checkboxes: a list of Literal values, such as report_to),
# text (free text; "auto" or a number for num_threads), list (one string, or a comma-separated list
# such as target_modules), yaml (a list of typed items such as grpo.rewards, written as YAML flow
# text, "[{name: json_valid, weight: 1}]", and parsed by the config model).
KINDS = ("int", "float", "bool", "choice", "multi", "text", "list", "yaml")


def _unwrap(annotation: Any) -> tuple[list[Any], bool]:
    """The non-None members of a (possibly optional) annotation, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = list(typing.get_args(annotation))
    else:
        members = [annotation]
    nullable = type(None) in members
    return [m for m in members if m is not type(None)], nullable


def _kind(members: list[Any]) -> tuple[str, list[str]]:
    """(kind, choices) for the non-None members of a field's annotation."""
    if len(members) == 1:
        only = members[0]
        if typing.get_origin(only) is Literal:
            return "choice", [str(v) for v in typing.get_args(only)]
        if only is bool:
            return "bool", []
        if only is int:
            return "int", []
        if only is float:
            return "float", []
        if typing.get_origin(only) is list:
            (item,) = typing.get_args(only) or (str,)
            if typing.get_origin(item) is Literal:
                return "multi", [str(v) for v in typing.get_args(item)]
            if isinstance(item, type) and issubclass(item, BaseModel):
                return "yaml", []
            return "list", []
        return "text", []
    if any(typing.get_origin(m) is list for m in members):
        return "list", []
    return "text", []  # e.g. int | Literal["auto"]


def _bounds(info: FieldInfo) -> dict:
    """min/max attributes for a number input from the field's ge/gt/le/lt constraints."""
    out: dict = {}
    for item in info.metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            value = getattr(item, attr, None)
            if value is not None:
                out[key] = value
    return out


def _display(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def _field(group: str, name: str, info: FieldInfo) -> dict:
    members, nullable = _unwrap(info.annotation)
    kind, choices = _kind(members)
    default = info.get_default(call_default_factory=True)
    if kind == "yaml":  # a list of typed items, shown in the input as the list ("[]") and parsed back by the config
        default = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in default]
    return {"path": f"{group}.{name}", "name": name, "kind": kind, "choices": choices, "nullable": nullable,
            "default": list(default) if kind in ("multi", "yaml") else _display(default),
            "description": info.description or "", **_bounds(info)}


@functools.lru_cache(maxsize=1)
def form_groups() -> list[dict]:
    """The config groups and their fields, in the order of the YAML file."""
    from oikyo.train.config import TrainConfig

    groups = []
    for group, info in TrainConfig.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), group
        fields = [_field(group, name, sub) for name, sub in model.model_fields.items()]
        groups.append({"name": group, "doc": (model.__doc__ or "").strip(), "fields": fields})
    return groups
