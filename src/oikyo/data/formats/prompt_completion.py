"""Prompt/completion pairs: ``{"prompt", "completion"}`` → user / assistant turns.

Both may also be lists of OpenAI-style messages (TRL's "conversational prompt-completion"), in
which case the prompt turns come first and the completion turns after them.
"""

from __future__ import annotations

from oikyo.data.formats.base import Format, check_fields, require_assistant, require_text
from oikyo.data.formats.openai import convert_messages

FIELDS = frozenset({"prompt", "completion"})


def _turns(value, path: str, role: str) -> list[dict]:
    """Text as one turn of ``role``, or a list of messages as canonical turns."""
    if type(value) is list:
        return convert_messages(value, path)
    return [{"role": role, "content": require_text(value, path)}]


def convert(rec: dict) -> dict:
    """One prompt/completion record as a canonical conversations row."""
    if len(rec) != 2:
        check_fields(rec, FIELDS, "prompt_completion", ("prompt", "completion"))
    messages = _turns(rec.get("prompt"), "prompt", "user") + _turns(rec.get("completion"), "completion", "assistant")
    require_assistant(messages, "completion")
    return {"messages": messages}


FORMAT = Format(
    name="prompt_completion",
    kind="conversations",
    variants=(("prompt", "completion"),),
    optional=frozenset(),
    convert=convert,
    description='prompt/completion: {"prompt", "completion"}',
)
