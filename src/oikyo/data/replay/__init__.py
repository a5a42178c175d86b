"""General conversational replay data for ``data.mix``: the shipped set, or a dataset version.

Fine-tuning a small model on one narrow task makes it forget how to answer anything else. Mixing a
share of general conversations into every training batch ("replay") keeps its general behaviour.
oikyo ships such a set (``general.jsonl``, built by :mod:`oikyo.data.replay.build`: oikyo's own
prompts answered by the bundled base model; licence in NOTICE); a user can replay any
conversations dataset version instead (``data.mix_dataset``)::

    replay = load_replay(None)              # the shipped set
    replay = load_replay("my-chats")        # a dataset version: id, name (latest) or name@id
    replay.rows                             # canonical conversation rows ({"messages": [...]})
    replay.lineage                          # what the model version records: source, hash, rows

``data.mix_dataset: parent`` replays the training split of the dataset version that trained the
model version a run starts from; :mod:`oikyo.jobs.training` reads that from the model version's
lineage and calls :func:`load_dataset_replay`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from oikyo.errors import OikyoError

PARENT = "parent"  # data.mix_dataset: the training data of the parent model version (resolved in oikyo.jobs)
REPLAY_VERSION = "1"  # bump when general.jsonl is rebuilt with other prompts or another model
SHIPPED_FILE = Path(__file__).resolve().parent / "general.jsonl"
NOTICE_FILE = Path(__file__).resolve().parent / "NOTICE"


class ReplayError(OikyoError):
    """The replay data cannot be used (missing file, unknown dataset, rows that are not conversations)."""


@dataclass
class Replay:
    """Replay conversations and where they came from."""

    rows: list[dict]
    lineage: dict = field(default_factory=dict)


def read_shipped(path: Path | None = None) -> tuple[dict, list[dict]]:
    """(provenance header, conversation rows) of a replay JSONL written by the builder (default: the shipped one)."""
    path = path or SHIPPED_FILE
    if not path.is_file():
        raise ReplayError(f"the shipped replay set is missing ({path}); rebuild it with "
                          "`python -m oikyo.data.replay.build` or set data.mix_dataset")
    header, rows = {}, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if "provenance" in item:
            header = item["provenance"]
        elif isinstance(item.get("messages"), list):
            rows.append({"messages": item["messages"]})
        else:
            raise ReplayError(f"{path.name} line {number} is neither the provenance header nor a conversation")
    return header, rows


def resolve_mix_dataset(ref: str):
    """The conversations dataset version that ``data.mix_dataset`` names (ReplayError when it cannot be replayed)."""
    from oikyo.data import versions

    if ref == PARENT:
        raise ReplayError("data.mix_dataset: parent is resolved from the lineage of the model version in model.name "
                          "by the job system (oikyo train); outside it, name the dataset version to replay")
    try:
        version = versions.resolve(ref)
    except OikyoError as error:
        raise ReplayError(f"data.mix_dataset: {error}") from None
    if version.kind != "conversations":
        raise ReplayError(f"data.mix_dataset: {version.name}@{version.id} holds {version.kind} rows; "
                          "replay needs conversations")
    return version


def load_dataset_replay(version, *, split: str | None = None, lineage: dict | None = None) -> Replay:
    """The conversations of dataset version ``version`` (only ``split`` when given) as replay rows.

    ``lineage`` adds keys to the recorded identity (data.mix_dataset=parent: the parent model version
    and the share).
    """
    from oikyo.data import versions

    if version.kind != "conversations":
        raise ReplayError(f"data.mix_dataset: {version.name}@{version.id} holds {version.kind} rows; "
                          "replay needs conversations")
    rows = [{"messages": row["messages"], "tools": row.get("tools")}
            for row in versions.iter_rows(version, split=split)]
    if not rows:
        where = f"'s {split!r} split" if split else ""
        raise ReplayError(f"data.mix_dataset: {version.name}@{version.id}{where} has no rows")
    record = {"source": "dataset", "dataset_version": version.id, "dataset_hash": version.content_hash,
              "rows": len(rows)}
    if split:
        record["split"] = split
    return Replay(rows, {**record, **(lineage or {})})


def load_replay(mix_dataset: str | None) -> Replay:
    """The replay conversations for ``data.mix_dataset`` (None: the shipped set)."""
    if mix_dataset is None:
        header, rows = read_shipped(SHIPPED_FILE)
        digest = hashlib.sha256(SHIPPED_FILE.read_bytes()).hexdigest()
        lineage = {"source": "shipped", "replay_version": header.get("replay_version", REPLAY_VERSION),
                   "sha256": digest, "rows": len(rows)}
        return Replay(rows, lineage)
    return load_dataset_replay(resolve_mix_dataset(mix_dataset))
