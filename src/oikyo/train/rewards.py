"""The reward registry for GRPO: a plain dict from name to function, used by the built-ins and by user rewards alike.

A reward scores one sampled completion. Its signature is the same for every reward::

    fn(completion: str, reference: str | None, prompt_messages: list[dict], **args) -> float

``reference`` is the content of the row's last assistant turn (None when the row has none),
``prompt_messages`` the conversation the completion answers, and ``args`` the reward's ``args``
from the config. A user reward is a plain function in an importable module, registered with the
same decorator the built-ins use::

    from oikyo.train.rewards import reward

    @reward("polite")
    def polite(completion, reference, prompt_messages, **args):
        return float("please" in completion.lower())

and named in the config (the module is imported by the worker, as ``--metrics-module`` is)::

    grpo:
      reward_modules: [my_rewards]
      rewards:
        - {name: json_field_match, weight: 1.0}
        - {name: polite, weight: 0.2}

Built-ins (``BUILTINS``): ``exact_match``, ``json_valid``, ``json_field_match``, ``regex_match``
and ``length_penalty``; each one's docstring says what it returns and which args it takes.
:func:`build` turns the config's list into a :class:`RewardSet` whose ``score`` returns the weighted
sum and each reward's own value (reported as metrics ``reward/<name>``).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from oikyo.evaluate.json_answers import parse_json
from oikyo.evaluate.metrics import flatten, normalize_answer
from oikyo.train import TrainingError

RewardFn = Callable[..., float]
REWARDS: dict[str, RewardFn] = {}


def reward(name: str | None = None):
    """Register a reward function under ``name`` (default: the function's name)."""

    def register(fn: RewardFn) -> RewardFn:
        REWARDS[name or fn.__name__] = fn
        return fn

    return register


def get(name: str) -> RewardFn:
    """The registered reward ``name``; a :class:`TrainingError` naming the known ones otherwise."""
    if name not in REWARDS:
        raise TrainingError(_unknown(name))
    return REWARDS[name]


def load_modules(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the modules that register user rewards; a module that fails to import stops the run, named."""
    names = [m.strip() for m in modules if m and m.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure is the user's module
            raise TrainingError(f"cannot import reward module {module!r}: {error}") from None
    return names


# ----------------------------------------------------------------------------- built-ins


@reward("exact_match")
def exact_match(completion: str, reference: str | None, prompt_messages: list[dict], *,
                normalize: bool = False) -> float:
    """1.0 when the completion equals the reference (surrounding spaces ignored), else 0.0.

    ``normalize``: compare SQuAD-normalized text instead (case, punctuation and articles ignored).
    """
    if reference is None:
        return 0.0
    if normalize:
        return float(normalize_answer(completion) == normalize_answer(reference))
    return float(completion.strip() == reference.strip())


@reward("json_valid")
def json_valid(completion: str, reference: str | None, prompt_messages: list[dict]) -> float:
    """1.0 when the completion parses as a JSON object (a Markdown code fence around it is allowed), else 0.0."""
    return float(isinstance(parse_json(completion), dict))


@reward("json_field_match")
def json_field_match(completion: str, reference: str | None, prompt_messages: list[dict]) -> float:
    """Share of the reference JSON object's leaf fields (dotted keys) that the completion reproduces exactly.

    0.0 when the completion is not a JSON object, and when the reference is not one (nothing to match).
    The per-example form of the evaluation metric ``json_field_accuracy``.
    """
    ref = parse_json(reference) if reference is not None else None
    if not isinstance(ref, dict):
        return 0.0
    want = flatten(ref)
    got = parse_json(completion)
    have = flatten(got) if isinstance(got, dict) else {}
    return sum(1 for key, value in want.items() if key in have and have[key] == value) / max(len(want), 1)


@reward("regex_match")
def regex_match(completion: str, reference: str | None, prompt_messages: list[dict], *, pattern: str,
                full: bool = False) -> float:
    """1.0 when ``pattern`` (a Python regular expression, required) is found in the completion, else 0.0.

    ``full``: the whole completion (surrounding spaces ignored) must match, not just a part of it.
    """
    compiled = _compiled(pattern)
    found = compiled.fullmatch(completion.strip()) if full else compiled.search(completion)
    return float(found is not None)


@reward("length_penalty")
def length_penalty(completion: str, reference: str | None, prompt_messages: list[dict], *,
                   target: int | None = None, only_longer: bool = False) -> float:
    """``-|len(completion) - target| / target`` in characters, at least -1; 0.0 at the target length.

    ``target``: the wanted length in characters (default: the reference's length; 0.0 when neither is
    known). ``only_longer``: penalise only completions longer than the target.
    """
    if target is None:
        if not reference:
            return 0.0
        target = len(reference)
    excess = len(completion) - target
    if only_longer:
        excess = max(excess, 0)
    return -min(abs(excess) / max(target, 1), 1.0)


_PATTERNS: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    if pattern not in _PATTERNS:
        _PATTERNS[pattern] = re.compile(pattern, re.S)
    return _PATTERNS[pattern]


BUILTINS = tuple(REWARDS)  # every reward registered above; anything added later is a user reward


# ----------------------------------------------------------------------------- weighted sets


@dataclass
class WeightedReward:
    """One configured reward: its function, weight and keyword arguments."""

    name: str
    fn: RewardFn
    weight: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class RewardSet:
    """The configured rewards; :meth:`score` gives a completion's weighted sum and each reward's value."""

    rewards: list[WeightedReward]

    def score(self, completion: str, reference: str | None, prompt_messages: list[dict]) -> tuple[float, dict]:
        """(weighted sum, {name: value}) for one completion. A reward that fails or returns no finite
        number stops the run with a message naming it (a silently wrong reward would train the wrong thing)."""
        total, parts = 0.0, {}
        for item in self.rewards:
            try:
                value = item.fn(completion, reference, prompt_messages, **item.args)
            except Exception as error:  # noqa: BLE001 - the user's function: say which one failed
                raise TrainingError(f"reward {item.name!r} failed: {type(error).__name__}: {error}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TrainingError(f"reward {item.name!r} returned {value!r}; a reward must return a finite number")
            parts[item.name] = float(value)
            total += item.weight * float(value)
        return total, parts


def build(specs: list, modules: list[str] | tuple[str, ...] = ()) -> RewardSet:
    """A :class:`RewardSet` from the config's ``grpo.rewards`` (items with name, weight, args).

    Imports ``modules`` first (user rewards), then checks every reward exists and accepts its args,
    so a typo stops the run before any generation, with every problem listed.
    """
    load_modules(modules)
    problems, rewards = [], []
    for spec in specs:
        name, weight, args = _spec(spec)
        if name not in REWARDS:
            problems.append(_unknown(name))
            continue
        fn = REWARDS[name]
        problem = _args_problem(name, fn, args)
        if problem:
            problems.append(problem)
            continue
        rewards.append(WeightedReward(name=name, fn=fn, weight=weight, args=args))
    if not specs:
        problems.append("grpo.rewards is empty: name at least one reward (e.g. {name: json_valid})")
    if problems:
        raise TrainingError("reward problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return RewardSet(rewards)


def _spec(spec) -> tuple[str, float, dict]:
    if isinstance(spec, dict):
        return spec["name"], float(spec.get("weight", 1.0)), dict(spec.get("args") or {})
    return spec.name, float(spec.weight), dict(spec.args or {})


def _unknown(name: str) -> str:
    return (f"unknown reward {name!r}; known: {', '.join(sorted(REWARDS))} (user rewards: name their module in "
            "grpo.reward_modules)")


def _args_problem(name: str, fn: RewardFn, args: dict) -> str | None:
    """Why ``fn`` cannot take ``args`` (unknown or missing keyword, a bad regex), or None."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None  # a builtin or C function: let the call itself say
    try:
        signature.bind("", None, [], **args)
    except TypeError as error:
        return f"reward {name!r}: {error} (args given: {sorted(args) or 'none'})"
    if name == "regex_match" and fn is regex_match:
        try:
            _compiled(args["pattern"])
        except (re.error, TypeError) as error:
            return f"reward 'regex_match': args.pattern is not a valid regular expression ({error})"
    return None
