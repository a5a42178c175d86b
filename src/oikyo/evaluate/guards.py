"""The overlap guard: never report a score on rows the model was trained on without saying so.

A fine-tuned model's lineage names the dataset version and split it was trained on. Before
evaluating, :func:`find_overlap` checks, through that lineage:

- the evaluation uses the very same dataset version and split as training, or
- any evaluation row's content hash (:func:`oikyo.evaluate.examples.row_hash`) is among the training
  rows' hashes: the same row in a re-imported file, a parent version before the split, another split
  that received a duplicate, ...

:func:`enforce` refuses such an evaluation with :class:`OverlapError` (a clear message, exit code 2
in the CLI) unless ``force`` is given; a forced evaluation is stored with ``forced_overlap = true``,
which every listing, comparison and leaderboard shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from oikyo.errors import OikyoError
from oikyo.evaluate.examples import Example, row_hash
from oikyo.evaluate.targets import Target


class OverlapError(OikyoError):
    """The evaluation rows overlap the model's training rows (pass --force to evaluate anyway)."""


@dataclass
class Overlap:
    """What the guard found; ``overlapping`` is what the refusal is based on."""

    training_dataset: str
    training_split: str | None
    same_version_and_split: bool
    lineage: list[str]  # the training dataset version and its ancestors (parent chain)
    rows: int  # evaluation rows whose content is in the training rows
    total: int  # evaluation rows checked
    hashes_checked: bool  # False when the training rows could not be read (artifact missing)

    @property
    def overlapping(self) -> bool:
        return self.same_version_and_split or self.rows > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "overlapping": self.overlapping}


def _ancestors(version_id: str) -> list[str]:
    from oikyo.store import db
    from oikyo.store.models import DatasetVersion

    chain, seen = [], set()
    current = version_id
    with db.session() as s:
        while current and current not in seen:
            seen.add(current)
            chain.append(current)
            record = s.get(DatasetVersion, current)
            current = record.parent_id if record is not None else None
    return chain


def training_hashes(target: Target) -> set[str] | None:
    """Content hashes of the rows the model was trained on (None when they cannot be read)."""
    from oikyo.data import versions

    try:
        version = versions.resolve(target.training_dataset)
        if not versions.parquet_path(version).is_file():
            return None
        split = target.training_split if version.splits else None
        return {row_hash(row) for row in versions.iter_rows(version, split=split)}
    except OikyoError:
        return None


def find_overlap(target: Target, dataset_version_id: str, split: str | None, examples: list[Example]) -> Overlap | None:
    """The overlap between the evaluation rows and the model's training rows (None for a base model)."""
    if target.is_base or not target.training_dataset:
        return None
    same = dataset_version_id == target.training_dataset and (split is None or split == target.training_split
                                                              or target.training_split is None)
    hashes = training_hashes(target)
    rows = sum(1 for e in examples if e.key in hashes) if hashes is not None else 0
    return Overlap(training_dataset=target.training_dataset, training_split=target.training_split,
                   same_version_and_split=same, lineage=_ancestors(target.training_dataset), rows=rows,
                   total=len(examples), hashes_checked=hashes is not None)


def describe(overlap: Overlap, target: Target, dataset: str, split: str | None) -> str:
    where = f"{dataset}:{split}" if split else dataset
    trained = f"{overlap.training_dataset}:{overlap.training_split}" if overlap.training_split else overlap.training_dataset
    parts = []
    if overlap.same_version_and_split:
        parts.append(f"{where} is the very data {target.label} was trained on")
    if overlap.rows:
        parts.append(f"{overlap.rows} of {overlap.total} evaluation rows are in its training rows ({trained})")
    return "; ".join(parts)


def enforce(overlap: Overlap | None, target: Target, dataset: str, split: str | None, force: bool) -> bool:
    """Raise :class:`OverlapError` for an overlap unless ``force``; returns whether the result is forced."""
    if overlap is None or not overlap.overlapping:
        return False
    reason = describe(overlap, target, dataset, split)
    if not force:
        raise OverlapError(
            f"refusing to evaluate {target.label} on {dataset}{':' + split if split else ''}: {reason}. Scores on "
            "training rows overstate what the model learned. Evaluate on held-out data (e.g. "
            f"--dataset {overlap.training_dataset}:test), or pass --force to evaluate anyway (the result is "
            "stored and shown with forced_overlap=true)."
        )
    return True
