"""Export a dataset version to the formats other tools read.

``export_version("support", "openai", "support.jsonl", split="train")`` writes:

- ``openai``: chat JSONL ``{"messages": [{"role", "content"}], "tools"?}``; a ``tool_call`` turn
  becomes an assistant message with ``tool_calls``; preference rows become
  ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` (TRL's conversational layout).
- ``sharegpt``: JSONL ``{"conversations": [{"from", "value"}], "tools"?}`` (preference rows with
  ``chosen``/``rejected`` as ``{"from": "gpt", "value"}``), the layout LLaMA-Factory reads.
- ``alpaca``: JSONL ``{"instruction", "input", "output", "system"?, "history"?}``; the earlier
  user/assistant pairs of a multi-turn chat go to ``history``.
- ``jsonl``: the canonical rows themselves.
- ``parquet``: the canonical rows as Parquet.

The file is written next to its destination and renamed into place, so an interrupted export never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

from oikyo.data import versions
from oikyo.store.models import DatasetVersion

SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool_call": "function_call",
                 "tool": "observation"}


def _openai_message(m: dict) -> dict:
    if m["role"] == "tool_call":
        try:
            call = json.loads(m["content"])
            name, arguments = call.get("name", ""), call.get("arguments", {})
        except (ValueError, AttributeError):
            name, arguments = "", m["content"]
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        return {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": name, "arguments": arguments}}]}
    return {"role": m["role"], "content": m["content"]}


def to_openai(row: dict) -> dict:
    if "text" in row:
        return {"text": row["text"]}
    messages = [_openai_message(m) for m in row.get("messages", [])]
    if "chosen" in row:
        return {"prompt": messages, "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}
    out = {"messages": messages}
    if row.get("tools"):
        out["tools"] = json.loads(row["tools"]) if row["tools"].lstrip().startswith("[") else row["tools"]
    return out


def to_sharegpt(row: dict) -> dict:
    if "text" in row:
        return {"text": row["text"]}
    out = {"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]}
                             for m in row.get("messages", [])]}
    if "chosen" in row:
        out["chosen"] = {"from": "gpt", "value": row["chosen"]}
        out["rejected"] = {"from": "gpt", "value": row["rejected"]}
    if row.get("tools"):
        out["tools"] = row["tools"]
    return out


def to_alpaca(row: dict) -> dict:
    if "text" in row or "chosen" in row:
        raise versions.DataError("alpaca export is for conversation datasets; use jsonl or openai")
    messages = list(row.get("messages", []))
    system = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    if any(m["role"] in ("tool_call", "tool") for m in messages):
        raise versions.DataError("alpaca cannot hold tool calls; export to openai or sharegpt instead")
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise versions.DataError("alpaca needs every conversation to end with a user turn then an assistant turn")
    history, earlier = [], messages[:-2]
    for i in range(0, len(earlier) - 1, 2):
        history.append([earlier[i]["content"], earlier[i + 1]["content"]])
    out = {"instruction": messages[-2]["content"], "input": "", "output": messages[-1]["content"]}
    if system:
        out["system"] = system
    if history:
        out["history"] = history
    return out


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    rows = versions.iter_rows(version, split=split)
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
