"""Export a dataset version to the formats other tools read, losing nothing the version holds.

``export_version("support", "openai", "support.jsonl", split="train")`` writes:

- ``openai``: chat JSONL ``{"messages": [{"role", "content"}], "tools"?, "label"?}``; a ``tool_call``
  turn becomes an assistant message with ``tool_calls`` (with its id); a reasoning trace is the
  message's ``reasoning_content``, a loss weight its ``weight`` (OpenAI's key), ``name`` and
  ``tool_call_id`` stay. Preference rows become ``{"prompt": [...], "chosen": [...], "rejected":
  [...]}`` (TRL's conversational layout); labelled (KTO) rows ``{"messages", "label": true|false}``.
- ``sharegpt``: JSONL ``{"conversations": [{"from", "value"}], "tools"?}`` (preference rows with
  ``chosen``/``rejected`` as ``{"from": "gpt", "value"}``, KTO rows with LLaMA-Factory's
  ``kto_tag``), the layout LLaMA-Factory reads; message fields are kept as extra turn keys.
- ``alpaca``: JSONL ``{"instruction", "input", "output", "system"?, "history"?}``; the earlier
  user/assistant pairs of a multi-turn chat go to ``history``. Alpaca has no place for tool calls,
  reasoning, loss weights, class labels or KTO flags: a version holding any is refused, naming it.
- ``jsonl``: the canonical rows themselves.
- ``parquet``: the canonical rows as Parquet.

Every text format also writes a row's ``metadata`` (the columns kept with ``--keep``) as a
``metadata`` object and, when the whole version is exported, its ``split``; oikyo's importer reads
both back, so import, export and import again give the same version.

The file is written next to its destination and renamed into place, so an interrupted export never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

from oikyo.data import versions
from oikyo.data.schema import EXTRA_NAMES
from oikyo.store import disk
from oikyo.store.models import DatasetVersion

SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool_call": "function_call",
                 "tool": "observation"}


def _common(row: dict, out: dict) -> dict:
    """Add the columns every target keeps: metadata (as an object) and split."""
    if row.get("metadata") is not None:
        out["metadata"] = json.loads(row["metadata"])
    if row.get("split") is not None:
        out["split"] = row["split"]
    return out


def _tools(text: str):
    """Tool definitions as written: parsed when they are a JSON list, else the JSON text itself."""
    return json.loads(text) if text.lstrip().startswith("[") else text


def _standard_call(content: str) -> tuple[str, str] | None:
    """(name, arguments JSON text) of a tool call that reads back as exactly ``content``, else None.

    The importer writes a call as ``json.dumps({"name", "arguments"}, ensure_ascii=False)``; a call
    kept verbatim from the user's file (other spacing, escapes or keys) would not come back the same
    through OpenAI's ``tool_calls``, so it is exported as oikyo's own ``tool_call`` turn instead.
    """
    try:
        call = json.loads(content)
    except ValueError:
        return None
    if not isinstance(call, dict) or set(call) != {"name", "arguments"} or isinstance(call["arguments"], str):
        return None
    if json.dumps(call, ensure_ascii=False) != content:
        return None
    return call["name"], json.dumps(call["arguments"], ensure_ascii=False)


def _openai_message(m: dict) -> dict:
    standard = _standard_call(m["content"]) if m["role"] == "tool_call" else None
    if m["role"] == "tool_call" and standard is None:
        out = {"role": "tool_call", "content": m["content"]}  # verbatim (see _standard_call)
        if m.get("tool_call_id") is not None:
            out["tool_call_id"] = m["tool_call_id"]
    elif m["role"] == "tool_call":
        name, arguments = standard
        tool_call = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if m.get("tool_call_id") is not None:
            tool_call = {"id": m["tool_call_id"], **tool_call}
        out = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
    else:
        out = {"role": m["role"], "content": m["content"]}
        if m.get("tool_call_id") is not None:
            out["tool_call_id"] = m["tool_call_id"]
    if m.get("reasoning") is not None:
        out["reasoning_content"] = m["reasoning"]
    if m.get("weight") is not None:
        out["weight"] = m["weight"]
    if m.get("name") is not None:
        out["name"] = m["name"]
    return out


def to_openai(row: dict) -> dict:
    if "text" in row:
        return _common(row, {"text": row["text"]})
    messages = [_openai_message(m) for m in row.get("messages", [])]
    if "chosen" in row:
        out = {"prompt": messages, "chosen": [{"role": "assistant", "content": row["chosen"]}],
               "rejected": [{"role": "assistant", "content": row["rejected"]}]}
    else:
        out = {"messages": messages}
    if row.get("tools"):
        out["tools"] = _tools(row["tools"])
    if row.get("desirable") is not None:
        out["label"] = row["desirable"]
    elif row.get("label") is not None:
        out["label"] = row["label"]
    return _common(row, out)


def _sharegpt_turn(m: dict) -> dict:
    turn = {"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]}
    turn.update({name: m[name] for name in EXTRA_NAMES if m.get(name) is not None})
    return turn


def to_sharegpt(row: dict) -> dict:
    if "text" in row:
        return _common(row, {"text": row["text"]})
    if row.get("label") is not None:
        raise versions.DataError("sharegpt has no place for class labels; export to openai or jsonl instead")
    out = {"conversations": [_sharegpt_turn(m) for m in row.get("messages", [])]}
    if "chosen" in row:
        out["chosen"] = {"from": "gpt", "value": row["chosen"]}
        out["rejected"] = {"from": "gpt", "value": row["rejected"]}
    if row.get("desirable") is not None:
        out["kto_tag"] = row["desirable"]
    if row.get("tools"):
        out["tools"] = row["tools"]
    return _common(row, out)


def to_alpaca(row: dict) -> dict:
    if "text" in row or "chosen" in row or row.get("desirable") is not None:
        raise versions.DataError("alpaca export is for conversation datasets; use jsonl or openai")
    if row.get("label") is not None:
        raise versions.DataError("alpaca has no place for class labels; export to openai or jsonl instead")
    messages = list(row.get("messages", []))
    if any(m["role"] in ("tool_call", "tool") for m in messages):
        raise versions.DataError("alpaca cannot hold tool calls; export to openai or sharegpt instead")
    if row.get("tools"):
        raise versions.DataError("alpaca cannot hold tool definitions; export to openai or sharegpt instead")
    if any(m.get(name) is not None for m in messages for name in EXTRA_NAMES):
        held = sorted({name for m in messages for name in EXTRA_NAMES if m.get(name) is not None})
        raise versions.DataError(f"alpaca cannot hold a message's {', '.join(held)}; export to openai or sharegpt instead")
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    if any(m["role"] in ("tool_call", "tool") for m in messages):
        raise versions.DataError("alpaca cannot hold tool calls; export to openai or sharegpt instead")
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise versions.DataError("alpaca needs every conversation to end with a user turn then an assistant turn")
    earlier = messages[:-2]
    if any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(earlier)) or len(earlier) % 2:
        raise versions.DataError("alpaca history holds user/assistant pairs; export to openai or sharegpt instead")
    history = [[earlier[i]["content"], earlier[i + 1]["content"]] for i in range(0, len(earlier), 2)]
    out = {"instruction": messages[-2]["content"], "input": "", "output": messages[-1]["content"]}
    if system:
        out["system"] = system
    if history:
        out["history"] = history
    return _common(row, out)


CONVERTERS: dict[str, Callable[[dict], dict]] = {
    "openai": to_openai, "sharegpt": to_sharegpt, "alpaca": to_alpaca, "jsonl": lambda row: row,
}
TARGETS = (*CONVERTERS, "parquet")


def default_filename(version: DatasetVersion, to: str, split: str | None) -> str:
    ext = "parquet" if to == "parquet" else "jsonl"
    part = f"-{split}" if split else ""
    return f"{version.name}-{version.id}{part}.{to if to != 'parquet' else 'canonical'}.{ext}"


def export_version(ref: str, to: str, out: str | Path | None = None, *, split: str | None = None) -> tuple[Path, int]:
    """Write version ``ref`` (one split of it if given) in format ``to``; returns (path, rows)."""
    if to not in TARGETS:
        raise versions.DataError(f"unknown export format {to!r}; choose one of {', '.join(TARGETS)}")
    version = versions.resolve(ref)
    out = Path(out or default_filename(version, to, split))
    if out.is_dir():
        out = out / default_filename(version, to, split)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    rows = versions.iter_rows(version, split=split)
    if split is not None and to in ("openai", "sharegpt", "alpaca"):
        rows = ({k: v for k, v in row.items() if k != "split"} for row in rows)  # the file is that one split
    with disk.errors(f"could not export {version.name}@{version.id}", f"nothing was written to {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if to == "parquet":
                count, _ = versions.write_parquet_rows(rows, tmp)
            else:
                count = _write_jsonl(rows, CONVERTERS[to], tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out, count


def _write_jsonl(rows: Iterator[dict], convert: Callable[[dict], dict], path: Path) -> int:
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(convert(row), ensure_ascii=False) + "\n")
            count += 1
    return count
