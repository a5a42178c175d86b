"""A continuous-training policy: one YAML file per deployment, saying when to retrain, on what, how
to judge the result and how to roll it out.

Example (``docs/loop.md`` explains every field)::

    deployment: support-bot
    triggers:
      schedule: "0 3 * * *"      # cron (UTC): every night at 03:00
      new_examples: 200          # this many usable examples from traffic since the last cycle
      drift: true                # a drift alarm on the deployment
      metric_drop:               # quality of the champion's answers over the last hour
        negative_feedback_share: 0.3
        bad_share: 0.2
      cooldown: 1h               # at least this long between two cycles
    data:
      feedback: [positive, corrected]
      min_examples: 20
    train:
      config: configs/support-bot.yaml   # an ordinary training config; its dataset is set by the loop
      start: continue                    # continue the champion's adapter (or merge it and train anew)
      replay: 0.3                        # share of each batch replayed from the champion's training data
    gate:
      dataset: support-eval              # a fixed evaluation set, the same for every cycle
      split: validation
      metric: json_field_accuracy
      require: not_worse                 # or better: significance against the champion
      margin: 0.02
      forgetting_max: 0.05
    canary:
      share: 0.2
      min_requests: 100
      max_duration: 30m
    rollback:
      alpha: 0.05
      signals: [error, invalid_json, schema_mismatch, degenerate, empty, negative_feedback, latency]
      latency_limit_s: 10

Usage::

    policy = load(Path("loop.yaml"))          # raises PolicyError naming every problem
    policy.triggers.cooldown_s                # 3600.0
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oikyo.errors import OikyoError

SIGNALS = ("error", "invalid_json", "schema_mismatch", "degenerate", "empty", "negative_feedback", "latency")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(OikyoError):
    """The policy file does not parse or names something that does not exist."""


def parse_duration(text: str | float | int) -> float:
    """``"30m"`` -> 1800.0 seconds (units s, m, h, d; a bare number is seconds)."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 30m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricDrop(_Section):
    """Retrain when the champion's answers got worse over ``window``."""

    negative_feedback_share: float | None = Field(None, gt=0, le=1, description="Share of rated answers rated "
                                                  "negatively, at or above which the trigger fires.")
    bad_share: float | None = Field(None, gt=0, le=1, description="Share of answers with a quality flag (invalid "
                                    "JSON, schema mismatch, degenerate, empty) at or above which it fires.")
    window: str = Field("1h", description="How far back the shares are computed.")
    min_requests: int = Field(50, ge=1, description="Fewer answers (or ratings) in the window never fire it.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _something(self):
        if self.negative_feedback_share is None and self.bad_share is None:
            raise ValueError("metric_drop needs negative_feedback_share or bad_share")
        return self


class Triggers(_Section):
    schedule: str | None = Field(None, description="Cron expression (UTC), e.g. '0 3 * * *'.")
    new_examples: int | None = Field(None, ge=1, description="Fire when this many usable examples came from "
                                     "traffic since the last cycle began.")
    drift: bool = Field(False, description="Fire on a drift alarm of the deployment.")
    metric_drop: MetricDrop | None = None
    cooldown: str = Field("1h", description="Least time between the starts of two cycles (manual triggers excepted).")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import croniter

            if not croniter.is_valid(value):
                raise ValueError(f"{value!r} is not a cron expression (five fields: minute hour day month weekday)")
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def cooldown_s(self) -> float:
        return parse_duration(self.cooldown)

    def next_scheduled(self, after: datetime) -> datetime | None:
        """The first scheduled time strictly after ``after`` (None without a schedule)."""
        if self.schedule is None:
            return None
        from croniter import croniter

        return croniter(self.schedule, after).get_next(datetime)


class DataPlan(_Section):
    feedback: list[Literal["positive", "corrected"]] = Field(["positive", "corrected"], min_length=1,
                                                             description="Which answers from traffic become data.")
    min_examples: int = Field(20, ge=1, description="A cycle with fewer usable examples stops before training.")


class TrainPlan(_Section):
    config: str | dict = Field(..., description="A training config: a YAML file's path or the config inline. "
                               "The loop sets its model (the champion) and its dataset (the new version).")
    start: Literal["continue", "merge"] = Field("continue", description="continue: train the champion's adapter "
                                                "further; merge: merge it into its base and train a new adapter.")
    replay: float = Field(0.0, ge=0, lt=1, description="Share of each batch replayed from the champion's "
                          "training data (data.mix with data.mix_dataset: parent), against forgetting.")


class GatePlan(_Section):
    dataset: str = Field(..., description="The fixed evaluation set (a dataset version id or name).")
    split: str | None = Field("validation", description="Its split (null: every row).")
    metric: str | None = Field(None, description="The metric compared with the champion (default: the "
                               "evaluation's primary metric).")
    require: Literal["not_worse", "better"] = Field("not_worse", description="better: the challenger's gain is "
                                                    "significant (95% CI above 0); not_worse: the CI's low end is "
                                                    "above -margin.")
    margin: float = Field(0.02, ge=0, description="How much worse not_worse tolerates.")
    forgetting_max: float | None = Field(0.05, ge=0, description="Largest forgetting score the challenger may "
                                         "have (the forgetting probe); null: not checked.")
    limit: int | None = Field(200, ge=1, description="Evaluate on at most this many examples.")
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples for the confidence interval.")


class CanaryPlan(_Section):
    share: float = Field(0.2, gt=0, lt=1, description="Share of the traffic the challenger gets.")
    min_requests: int = Field(100, ge=1, description="Challenger answers needed before it can be promoted.")
    max_duration: str = Field("30m", description="A canary still undecided then is rolled back as inconclusive.")

    @field_validator("max_duration")
    @classmethod
    def _max_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def max_duration_s(self) -> float:
        return parse_duration(self.max_duration)


class RollbackPlan(_Section):
    alpha: float = Field(0.05, gt=0, lt=0.5, description="False-rollback rate of the sequential test.")
    signals: list[Literal[SIGNALS]] = Field(list(SIGNALS), min_length=1,
                                            description="What makes an answer bad: " + ", ".join(SIGNALS) + ".")
    latency_limit_s: float | None = Field(None, gt=0, description="An answer slower than this is bad (with the "
                                          "latency signal).")
    margin: float = Field(0.02, ge=0, le=1, description="How much higher the challenger's bad rate may be than "
                          "the champion's at promotion.")


class Policy(_Section):
    deployment: str
    enabled: bool = True
    triggers: Triggers = Field(default_factory=Triggers)
    data: DataPlan = Field(default_factory=DataPlan)
    train: TrainPlan
    gate: GatePlan
    canary: CanaryPlan = Field(default_factory=CanaryPlan)
    rollback: RollbackPlan = Field(default_factory=RollbackPlan)

    @model_validator(mode="after")
    def _some_trigger(self):
        t = self.triggers
        if not (t.schedule or t.new_examples or t.drift or t.metric_drop):
            raise ValueError("triggers: give at least one of schedule, new_examples, drift, metric_drop "
                             "(`oikyo loop trigger` starts a cycle by hand)")
        return self

    def quality_flags(self) -> tuple[str, ...]:
        return tuple(s for s in self.rollback.signals if s not in ("error", "negative_feedback", "latency"))

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _problems(error: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()]


def parse(data: dict, *, source: str = "policy") -> Policy:
    """A Policy from parsed YAML; raises PolicyError listing every problem."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as error:
        problems = _problems(error)
        raise PolicyError(f"{source} has {len(problems)} problem{'s' * (len(problems) != 1)}:\n"
                          + "\n".join(f"  - {p}" for p in problems)) from None


def load(path: Path) -> tuple[Policy, str]:
    """The policy in a YAML file, and the file's text (kept with the applied policy)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read the policy {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{path} is not valid YAML: {error}") from None
    policy = parse(data, source=str(path))
    if isinstance(policy.train.config, str):
        config_path = Path(policy.train.config)
        if not config_path.is_absolute():
            config_path = Path(path).resolve().parent / config_path
        if not config_path.is_file():
            raise PolicyError(f"{path}: train.config names {policy.train.config}, which does not exist")
        try:
            policy.train.config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise PolicyError(f"{config_path} is not valid YAML: {error}") from None
    return policy, text
