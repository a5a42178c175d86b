"""A study's budget: parsed from the user's text, and the rules that keep a study inside it.

A budget is either the wall time of trials (``"2h"``, ``"30m"``, ``"90s"``, ``"1.5h"``) or the
training tokens they consume (``"5M-tokens"``, ``"500k-tokens"``, ``"20000-tokens"``). A trial's
wall time is the sum over its runs of finished (or now) minus started; its tokens are the ``tokens``
metric its runs report while training.

The budget is a cap, held by two rules:

- Starting (:func:`fits`): a trial starts only when what is spent, plus what the trials still
  running will spend, plus its own estimated cost (x :data:`MARGIN`) stays within the budget. What a
  running trial will still spend is projected from its progress (spent so far x remaining steps /
  steps done) or, before it has any, from the mean cost of finished runs; when nothing can be
  projected yet, no second trial starts beside a running one. A new trial's cost is its planned
  rows (``max_steps x batch_size x grad_accum``, x folds) times the cost per row measured on the
  study's earlier runs (:func:`per_row`); before any run has measured it, the cost is unknown and
  the trial starts when nothing else runs. A drawn trial that does not fit is skipped (the driver
  draws again, so cheaper configurations still use what is left); once even the space's cheapest
  configuration (:func:`cheapest_rows`) does not fit, nothing more is drawn.
- Stopping (:func:`reached`): once what is spent reaches the budget, trials still training are
  stopped (their runs cancelled, within a step or two); such a trial counts as pruned, and the
  validation losses its run reported stay in its metrics. With good estimates this only happens to
  a trial started before anything was measured.

::

    budget = parse_budget("2h")                 # Budget(kind="seconds", limit=7200.0)
    may_launch(budget, spent=6000, running=[(600.0, 900.0)])   # False: 6000 + 900 >= 7200
    fits(budget, spent=6000, running=[], cost=1200.0)          # False: 6000 + 1200 x 1.05 > 7200
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oikyo.errors import OikyoError

# Lower-case units only: "5M" would otherwise read as five minutes when the user meant tokens.
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d)\s*$")
_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmb]?)[-_ ]?tokens?\s*$", re.I)
_SECONDS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
            "d": 86400}
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
# A trial's estimated cost is scaled by this before it must fit: the rows a trial trains on are not
# the rows the cost per row was measured on (lengths vary), and a trial that overruns is stopped
# before its last steps, where a decaying schedule gives its best validation loss.
MARGIN = 1.05


class BudgetError(OikyoError):
    """A budget that cannot be read."""


@dataclass(frozen=True)
class Budget:
    """``kind`` is ``seconds`` (wall time of trials) or ``tokens`` (training tokens); ``limit`` in that unit."""

    kind: str
    limit: float
    text: str

    def format(self, amount: float) -> str:
        """``amount`` in this budget's unit, for progress lines ("1h02m", "1.2M tokens")."""
        if self.kind == "tokens":
            return f"{amount / 1e6:.2f}M tokens" if amount >= 1e5 else f"{amount:.0f} tokens"
        amount = int(amount)
        if amount >= 3600:
            return f"{amount // 3600}h{amount % 3600 // 60:02d}m"
        return f"{amount // 60}m{amount % 60:02d}s"


def parse_budget(text: str | None) -> Budget | None:
    """Parse ``--budget`` (None or empty: no budget); raises :class:`BudgetError` with the accepted forms."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    match = _TIME.match(text)
    if match:
        limit = float(match.group(1)) * _SECONDS[match.group(2)]
        kind = "seconds"
    else:
        match = _TOKENS.match(text)
        if not match:
            raise BudgetError(f"budget {text!r} is not a duration or a token count; write the wall time of the "
                              "trials as 2h, 30m or 90s, or training tokens as 5M-tokens or 500k-tokens")
        limit = float(match.group(1)) * _SCALE[match.group(2).lower()]
        kind = "tokens"
    if limit <= 0:
        raise BudgetError(f"budget {text!r} must be more than zero")
    return Budget(kind=kind, limit=limit, text=text)


def project(spent: float, step: int | None, total_steps: int | None) -> float | None:
    """What a started run will still spend, from its progress (None when it cannot be told yet)."""
    if step and total_steps and step > 0:
        return max(0.0, spent * (total_steps - step) / step)
    return None


def may_launch(budget: Budget | None, *, spent: float, running: list[tuple[float, float | None]]) -> bool:
    """Whether another trial may start: ``spent`` is what every trial used so far, ``running`` holds
    (spent, still to spend or None when unknown) for each trial not finished yet."""
    if budget is None:
        return True
    if spent >= budget.limit:
        return False
    if any(rest is None for _, rest in running):
        return False  # a running trial's cost is unknown: starting another could overshoot by more than one trial
    return spent + sum(rest for _, rest in running) < budget.limit


def fits(budget: Budget | None, *, spent: float, running: list[tuple[float, float | None]],
         cost: float | None) -> bool:
    """Whether a new trial estimated to spend ``cost`` (None: not known yet) may start: :func:`may_launch`,
    and what is spent, what the running trials will still spend and ``cost`` x :data:`MARGIN` stay within
    the budget."""
    if not may_launch(budget, spent=spent, running=running):
        return False
    if budget is None or cost is None:
        return True
    return spent + sum(rest for _, rest in running) + cost * MARGIN <= budget.limit


def reached(budget: Budget | None, spent: float) -> bool:
    """Whether the budget is spent, so trials still training must stop."""
    return budget is not None and spent >= budget.limit


def rows_per_step(config: dict) -> int:
    """Training rows one optimizer step of ``config`` (a config mapping) goes through: batch_size x grad_accum."""
    train = config.get("train") or {}
    return int(train.get("batch_size") or 1) * int(train.get("grad_accum") or 1)


def planned_rows(config: dict) -> int | None:
    """Training rows a run of ``config`` (a config mapping) goes through: max_steps x :func:`rows_per_step`;
    None when it trains by epochs (its length depends on the dataset)."""
    steps = (config.get("train") or {}).get("max_steps")
    if not steps:
        return None
    return int(steps) * rows_per_step(config)


ROW_KEYS = ("train.max_steps", "train.batch_size", "train.grad_accum")


def cheapest_rows(space, base: dict) -> int | None:
    """:func:`planned_rows` of the cheapest trial ``space`` (a :class:`oikyo.tune.space.Space`) can draw on
    ``base``: the smallest value of each searched key among :data:`ROW_KEYS`; None when unknown (a trial
    trains by epochs, or a choice of one of those keys is not a number)."""
    values = {}
    for key in ROW_KEYS:
        if key not in space.names:
            continue
        bounds = space[key].extremes()
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds):
            return None
        values[key] = min(bounds)
    return planned_rows(space.config_for(values, base))


def per_row(measured: list[tuple[float, int]]) -> float | None:
    """Cost of one training row from (cost, rows trained) of earlier runs; None before any row was trained."""
    rows = sum(count for _, count in measured if count > 0)
    if rows <= 0:
        return None
    return sum(cost for cost, count in measured if count > 0) / rows
