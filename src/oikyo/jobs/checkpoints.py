"""Records of a run's checkpoints, kept in step with the folders the recipe writes.

The recipe owns ``<run_dir>/checkpoints/step-NNNNNN/``: it writes each folder atomically, marks it
``COMPLETE`` last, and may prune old ones (best-k). The worker calls :func:`sync` on every heartbeat
and once at the end, so the ``checkpoints`` table lists exactly the complete folders on disk, with
their eval loss when known and the best one flagged. A machine that holds no ``checkpoints/`` folder
for the run (a worker whose runs train on other Ray nodes) leaves the records alone.

With a shared artifact store the recipe also uploads each complete folder (see
:mod:`oikyo.train.checkpoints`); its manifest key is recorded here, and :func:`restore_latest`
brings the newest one back onto a machine that lacks it before an attempt starts, so a run killed
on one machine resumes on another.

Usage::

    from oikyo.jobs import checkpoints
    checkpoints.sync(run_id, run_dir, best=result.best_checkpoint)
    checkpoints.list_checkpoints(run_id)
    checkpoints.restore_latest(run_id, run_dir)   # -> the step fetched from the shared store, or None
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from oikyo.store import artifacts, db, manifests
from oikyo.store.models import Checkpoint, Metric
from oikyo.train import checkpoints as train_checkpoints

COMPLETE_MARKER = "COMPLETE"
_STEP = re.compile(r"^step-(\d+)$")


def complete_folders(run_dir: Path) -> dict[int, Path]:
    """Complete checkpoint folders of a run by step (folders without the marker are unfinished)."""
    found = {}
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        match = _STEP.search(folder.name)
        if folder.is_dir() and match and (folder / COMPLETE_MARKER).exists():
            found[int(match.group(1))] = folder
    return found


def _eval_loss(folder: Path, run_id: str, step: int) -> float | None:
    """The eval loss saved with a checkpoint, else the one reported at its step."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        value = state.get("eval_loss")
        if isinstance(value, (int, float)):
            return float(value)
    except (OSError, ValueError, AttributeError):
        pass
    with db.session() as s:
        return s.scalar(select(Metric.value).where(Metric.run_id == run_id, Metric.name == "eval_loss",
                                                   Metric.step == step).order_by(Metric.id.desc()).limit(1))


def sync(run_id: str, run_dir: Path, best: Path | None = None) -> list[Checkpoint]:
    """Make the table match the complete folders on disk; flag ``best`` when given."""
    if not (Path(run_dir) / "checkpoints").is_dir():
        return list_checkpoints(run_id)  # this machine holds none of them: another one trains the run
    on_disk = complete_folders(run_dir)
    best_path = str(Path(best).resolve()) if best else None
    with db.session() as s:
        known = {c.step: c for c in s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id))}
        gone = [step for step in known if step not in on_disk]
        if gone:
            s.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.step.in_(gone)))
        for step, folder in on_disk.items():
            record = known.get(step)
            if record is None:
                record = Checkpoint(run_id=run_id, step=step, path=str(folder.resolve()),
                                    eval_loss=_eval_loss(folder, run_id, step), is_best=False)
                s.add(record)
            elif record.eval_loss is None:
                record.eval_loss = _eval_loss(folder, run_id, step)
            key = train_checkpoints.manifest_key(folder)
            if key and record.manifest != key:
                record.manifest = key
            if best_path is not None:
                record.is_best = str(folder.resolve()) == best_path
        try:
            s.flush()
        except IntegrityError:  # another process recorded the same folder meanwhile: theirs is as good
            s.rollback()
    return list_checkpoints(run_id)


def list_checkpoints(run_id: str) -> list[Checkpoint]:
    with db.session() as s:
        return list(s.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step)))


def latest_step(run_dir: Path) -> int | None:
    """The step of the newest complete checkpoint on disk (where a resumed run continues)."""
    steps = complete_folders(run_dir)
    return max(steps) if steps else None


def restore_latest(run_id: str, run_dir: Path) -> int | None:
    """Bring the run's newest uploaded checkpoint from the shared store when this machine lacks it.

    Returns its step, or None when there is nothing newer to fetch (or no shared store). The folder
    is assembled under a temp name (its files hard links to the verified blob cache) and renamed into
    ``checkpoints/step-NNNNNN``, so the recipe never sees half of it.
    """
    if not artifacts.is_remote():
        return None
    uploaded = [c for c in list_checkpoints(run_id) if c.manifest]
    if not uploaded:
        return None
    newest = max(uploaded, key=lambda c: c.step)
    if (latest_step(run_dir) or -1) >= newest.step:
        return None
    source = manifests.materialize(newest.manifest)
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / train_checkpoints.checkpoint_name(newest.step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp, copy_function=manifests.link_or_copy)
    if final.exists():  # an incomplete folder of that step (its COMPLETE marker never written)
        shutil.rmtree(final)
    os.rename(tmp, final)
    train_checkpoints.write_manifest_key(final, newest.manifest)
    return newest.step
