"""Reading a model's answer as JSON: one rule for the metrics, the GRPO rewards and the serving
quality signals. Kept free of heavy imports (no numpy), so the router can check answers with it.

    parse_json('```json\n{"a": 1}\n```')   # {"a": 1}
    parse_json("not json")                  # None
"""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)\n?```", flags=re.S)


def parse_json(text: str):
    """The JSON value in an answer (a surrounding Markdown code fence is allowed), or None when it does not parse."""
    text = text.strip()
    fenced = _FENCE.fullmatch(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
