"""The dataset format registry: one module per format, each exposing ``FORMAT`` (a :class:`Format`).

To add a format, write ``formats/<name>.py`` with a ``FORMAT`` and add its name to ``BUILTIN``
(one line). Another package can call :func:`register` at import time instead. Order matters only
for listings and for the order in which suggestions are offered.
"""

from __future__ import annotations

import importlib

from oikyo.data.formats.base import Format, RowError

BUILTIN = (
    "openai",
    "sharegpt",
    "alpaca",
    "prompt_completion",
    "text",
    "preference",
    "kto",
    "classification",
)

FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add a format to the registry (replacing one of the same name)."""
    FORMATS[fmt.name] = fmt
    return fmt


def get(name: str) -> Format | None:
    """The format called ``name``, or None."""
    return FORMATS.get(name)


for _name in BUILTIN:
    register(importlib.import_module(f"{__name__}.{_name}").FORMAT)

__all__ = ["BUILTIN", "FORMATS", "Format", "RowError", "get", "register"]
