"""Evaluation examples from a dataset version: prompt, reference answer, row hash; and few-shot prompts.

A conversation row becomes one example: the prompt is every message before its last assistant turn,
the reference is that turn's content. The row hash (sha256 of the row's canonical JSON without its
``split``) identifies the example across dataset versions: the overlap guard compares hashes, and
``oikyo compare`` pairs the examples of two evaluations by them::

    examples = load_examples(version, "test", limit=100)
    shots = choose_shots(train_rows, k=3, seed=0, exclude={e.key for e in examples})
    messages = few_shot_messages(examples[0], shots)   # system, shot turns, then the question
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Iterable

from oikyo.data.schema import ASSISTANT_ROLES
from oikyo.errors import OikyoError


@dataclass
class Example:
    """One evaluation example (``index``: its position among the split's rows)."""

    index: int
    key: str
    prompt: list[dict]
    reference: str
    row: dict
    tools: str | None = None
    label: str | None = None
    kind: str = "conversations"
    extra: dict = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message (what a person reads to understand the example)."""
        users = [m.get("content") or "" for m in self.prompt if m["role"] == "user"]
        return users[-1] if users else ""


def row_hash(row: dict) -> str:
    """sha256 of a row's content (every column but ``split``), the same for the same row in any version."""
    content = {k: v for k, v in row.items() if k != "split" and v is not None}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _last_reply(messages: list[dict]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] in ASSISTANT_ROLES:
            return i
    return None


def to_example(index: int, row: dict) -> Example | None:
    """The example of one canonical row (None for a conversation without an assistant turn)."""
    if row.get("chosen") is not None:
        raise OikyoError("preference (DPO) datasets cannot be evaluated with generation metrics; "
                         "evaluate on a conversations dataset")
    if row.get("messages") is None:
        text = row.get("text") or ""
        return Example(index=index, key=row_hash(row), prompt=[], reference=text, row=row, kind="text")
    messages = list(row["messages"])
    last = _last_reply(messages)
    if last is None or last == 0:
        return None
    return Example(index=index, key=row_hash(row), prompt=messages[:last], reference=messages[last].get("content") or "",
                   row={**row, "messages": messages[: last + 1]}, tools=row.get("tools"), label=row.get("label"))


def load_examples(version, split: str | None, limit: int | None = None) -> list[Example]:
    """The examples of ``version``'s ``split`` (every row when None), the first ``limit`` of them."""
    from oikyo.data import versions

    examples: list[Example] = []
    for index, row in enumerate(versions.iter_rows(version, split=split)):
        example = to_example(index, row)
        if example is not None:
            examples.append(example)
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        where = f"split {split!r} of " if split else ""
        raise OikyoError(f"{where}{version.name}@{version.id} has no rows to evaluate")
    return examples


def choose_shots(rows: Iterable[dict], k: int, seed: int, exclude: set[str] = frozenset()) -> list[Example]:
    """``k`` training examples drawn with ``seed`` (never one whose hash is in ``exclude``)."""
    pool = [e for e in (to_example(i, row) for i, row in enumerate(rows))
            if e is not None and e.kind == "conversations" and e.key not in exclude]
    if k <= 0 or not pool:
        return []
    return random.Random(seed).sample(pool, min(k, len(pool)))


def few_shot_messages(example: Example, shots: list[Example]) -> list[dict]:
    """The example's prompt with each shot's question and answer as prior turns.

    The example's own system message stays first; the shots' system messages are left out (they
    are usually the same instruction). The tools of the example apply to the whole conversation.
    """
    system = [m for m in example.prompt[:1] if m["role"] == "system"]
    messages = list(system)
    for shot in shots:
        messages += [m for m in shot.prompt if m["role"] != "system"]
        messages.append({"role": "assistant", "content": shot.reference})
    messages += example.prompt[len(system):]
    return messages
