"""Quality gates: conditions on an evaluation's results that a pipeline can act on.

A gate is a comma-separated list of conditions ``NAME OP NUMBER`` with OP one of
``>= <= > < == !=``::

    gate = parse_gate("json_field_accuracy>=0.8, forgetting<=0.05, delta.exact_match>0")
    outcome = check_gate(gate, values)      # values: name -> number, from gate_values(...)
    outcome.passed, outcome.failures

Names: any metric of the evaluated model (``accuracy``), the same metric of a baseline
(``base.accuracy``, ``few_shot.accuracy``), the gain over the base model (``delta.accuracy`` =
model - base), and the forgetting probe's ``forgetting``, ``perplexity_ratio``,
``probe_accuracy_delta``, ``degenerate_increase``. ``oikyo eval --gate`` exits with :data:`EXIT_GATE_FAILED` (3) when a
condition fails and 2 (:class:`GateError`) when the gate cannot be parsed or names an unknown value.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field

from oikyo.errors import OikyoError

EXIT_GATE_FAILED = 3
OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
             ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class GateError(OikyoError):
    """The gate text does not parse, or names a value the evaluation does not have."""


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold:g}"

    def holds(self, value: float) -> bool:
        return not math.isnan(value) and OPERATORS[self.op](value, self.threshold)


@dataclass
class GateOutcome:
    passed: bool
    results: list[dict] = field(default_factory=list)  # {"condition", "value", "passed"} per condition

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.results if not r["passed"]]


def parse_gate(text: str) -> list[Condition]:
    """Parse ``"accuracy>=0.8,forgetting<=0.05"``; raises :class:`GateError` naming each bad part."""
    parts = [p for p in (text or "").split(",")]
    if not text or not text.strip():
        raise GateError("empty gate: give conditions like 'accuracy>=0.8,forgetting<=0.05'")
    conditions, problems = [], []
    for part in parts:
        match = _CONDITION.match(part)
        if match is None:
            problems.append(f"{part.strip()!r} is not NAME OP NUMBER (OP: >=, <=, >, <, ==, !=)")
            continue
        conditions.append(Condition(match.group(1), match.group(2), float(match.group(3))))
    if problems:
        raise GateError("cannot parse the gate: " + "; ".join(problems))
    return conditions


def gate_values(model_metrics: dict, baselines: dict[str, dict] | None = None,
                forgetting: dict | None = None) -> dict[str, float]:
    """Every name a gate may use, from the model's metrics, its baselines' metrics and the probe result."""
    values = {name: float(v) for name, v in model_metrics.items() if isinstance(v, (int, float))}
    for role, metrics in (baselines or {}).items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                values[f"{role}.{name}"] = float(value)
                if name in model_metrics and isinstance(model_metrics[name], (int, float)) and role == "base":
                    values[f"delta.{name}"] = float(model_metrics[name]) - float(value)
    for key in ("forgetting", "perplexity_ratio", "probe_accuracy_delta", "degenerate_increase"):
        if forgetting and isinstance(forgetting.get(key), (int, float)):
            values[key] = float(forgetting[key])
    return values


def check_gate(conditions: list[Condition], values: dict[str, float]) -> GateOutcome:
    """Evaluate every condition; an unknown name raises :class:`GateError` listing the known ones."""
    unknown = [c.name for c in conditions if c.name not in values]
    if unknown:
        raise GateError(f"the gate names {', '.join(unknown)}, which this evaluation does not have; "
                        f"available: {', '.join(sorted(values))}")
    results = [{"condition": str(c), "value": values[c.name], "passed": c.holds(values[c.name])} for c in conditions]
    return GateOutcome(passed=all(r["passed"] for r in results), results=results)
