"""Alpaca instruction format: ``{"instruction", "input", "output", "system", "history"}``.

The user turn is ``instruction``, followed by ``"\\n\\n" + input`` when ``input`` is not empty;
the assistant turn is ``output``. ``system`` (optional) becomes the first turn and ``history``
(optional, a list of ``[user, assistant]`` pairs) the turns before the instruction. This is the
format of LLaMA-Factory's ``alpaca_en_demo.json`` and ``identity.json``.
"""

from __future__ import annotations

from oikyo.data.formats.base import (
    Format,
    RowError,
    check_fields,
    json_list,
    optional_text,
    require_text,
    type_name,
)

FIELDS = frozenset({"instruction", "input", "output", "system", "history"})
PLAIN_FIELDS = frozenset({"instruction", "input", "output"})  # the hot path: no system prompt, no history


def _history(value) -> list[dict]:
    """``[[user, assistant], ...]`` as alternating canonical turns."""
    pairs = json_list(value, "history")
    if not pairs:
        return []
    messages = []
    for i, pair in enumerate(pairs):
        if type(pair) is not list or len(pair) != 2:
            raise RowError("wrong_type", f"history[{i}]", f"history[{i}] must be a pair [user text, assistant text]")
        messages.append({"role": "user", "content": require_text(pair[0], f"history[{i}][0]")})
        messages.append({"role": "assistant", "content": require_text(pair[1], f"history[{i}][1]")})
    return messages


def convert(rec: dict) -> dict:
    """One Alpaca record as a canonical conversations row."""
    # The common case first, checked inline: three text fields, nothing else (this is the hot path
    # of a large import); anything unusual takes the careful path below.
    instruction, output, extra = rec.get("instruction"), rec.get("output"), rec.get("input", "")
    if (
        type(instruction) is str
        and type(output) is str
        and type(extra) is str
        and instruction
        and output
        and not instruction.isspace()
        and not output.isspace()
        and rec.keys() <= PLAIN_FIELDS
    ):
        user = instruction + "\n\n" + extra if extra and not extra.isspace() else instruction
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}
    return _convert(rec)


def _convert(rec: dict) -> dict:
    if not rec.keys() <= FIELDS:
        check_fields(rec, FIELDS, "alpaca", ("instruction", "output"))
    instruction = require_text(rec.get("instruction"), "instruction")
    output = require_text(rec.get("output"), "output")
    extra = rec.get("input")
    if extra is not None and type(extra) is not str:
        raise RowError("wrong_type", "input", f"input must be text, got {type_name(extra)}")
    user = instruction + "\n\n" + extra if extra and not extra.isspace() else instruction
    if "system" not in rec and "history" not in rec:
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}
    messages = _history(rec.get("history"))
    system = optional_text(rec.get("system"), "system")
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": output})
    return {"messages": messages}


FORMAT = Format(
    name="alpaca",
    kind="conversations",
    variants=(("instruction", "output"),),
    optional=frozenset({"input", "system", "history"}),
    convert=convert,
    description='Alpaca: {"instruction", "input", "output", "system", "history"}',
)
