"""Atomic, self-describing training checkpoints with best-k retention and exact resume.

Layout of one checkpoint (``run_dir/checkpoints/step-000050/``)::

    adapter_model.safetensors + adapter_config.json    LoRA weights (peft layout), or
    model.safetensors + config.json + generation_config.json   full weights (transformers layout)
    optimizer.safetensors     AdamW state tensors, flattened: "<param index>.<name>" -> tensor
    optimizer.json            param groups (lr, betas, ...) and the non-tensor state values
    scheduler.json            the learning-rate scheduler's state_dict
    trainer_state.json        step, data position (epoch, batch), tokens, eval loss, early-stopping
                              counters, RNG states (python, numpy, torch CPU, CUDA) as integer lists
    COMPLETE                  written last: a folder without it is ignored and removed

A multi-process run (``train.nproc`` > 1) writes the same folder, except that the model's trainable
parameters and the optimizer state live in ``dcp/`` (torch.distributed.checkpoint files, keyed by
parameter name, loadable at any world size; see :mod:`oikyo.train.distributed`) instead of
optimizer.safetensors/json; the adapter safetensors are still written once, whole, by rank 0.
Either format resumes in either kind of run.

Writing is atomic: everything goes into ``.tmp-step-NNNNNN-<pid>`` in the same ``checkpoints/``
folder, every file is fsynced, the folder is renamed to ``step-NNNNNN``, then ``COMPLETE`` is
written and fsynced. A crash at any point leaves either an older complete checkpoint or a folder
that :func:`clean_incomplete` removes.

With a shared artifact store (``OIKYO_ARTIFACTS_URL``), :func:`commit` then uploads the complete
folder as a folder manifest (:mod:`oikyo.store.manifests`) and leaves the manifest's key beside it in
``step-NNNNNN.manifest``; the job system records that key with the checkpoint, so a run resumes on a
machine that never saw the folder (:func:`oikyo.jobs.checkpoints.restore_latest`). A crash during the
upload leaves no key: the checkpoint is then only resumable here. Nothing here uses pickle: weights and optimizer tensors are
safetensors, everything else is JSON, so a checkpoint never executes code when it is read.

Test hook (inert unless set): ``OIKYO_TEST_CHECKPOINT_PAUSE=<stage>:<file>`` makes the writer append
``<stage> <folder>`` to ``<file>`` and sleep :data:`TEST_PAUSE_S` seconds at that stage of every save:
``weights`` (weights written, optimizer not), ``optimizer`` (optimizer written, trainer state not) or
``renamed`` (renamed to ``step-NNNNNN``, COMPLETE not written yet), so a test can SIGKILL the process
while a checkpoint is half written (tests/reliability/test_training_kills.py).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_JSON = "scheduler.json"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
MANIFEST_SUFFIX = ".manifest"  # step-NNNNNN.manifest: the key of the folder's manifest in the shared store
TEST_PAUSE_ENV = "OIKYO_TEST_CHECKPOINT_PAUSE"  # the test hook described above
TEST_PAUSE_S = 30.0

logger = logging.getLogger("oikyo.train")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after optimizer step ``step``: ``step-000050``."""
    return f"step-{step:06d}"


def step_of(path: Path) -> int:
    """The step number encoded in a checkpoint folder's name."""
    match = _STEP_DIR.match(Path(path).name)
    if not match:
        raise ValueError(f"not a checkpoint folder: {path}")
    return int(match.group(1))


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished checkpoint (named step-N and holding the COMPLETE marker)."""
    return _STEP_DIR.match(Path(path).name) is not None and (Path(path) / COMPLETE).is_file()


def list_complete(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_complete(p)), key=step_of)


def latest_complete(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_complete(root)
    return found[-1] if found else None


def clean_incomplete(root: Path) -> list[Path]:
    """Remove leftovers of interrupted saves (temp folders, step folders without COMPLETE); return them."""
    root = Path(root)
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if path.is_dir() and not is_complete(path) and (path.name.startswith(".tmp-") or _STEP_DIR.match(path.name)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif path.is_file() and path.name.startswith(".tmp-"):  # an unfinished manifest-key file
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_state(path: Path) -> dict:
    """A checkpoint's ``trainer_state.json``."""
    return json.loads((Path(path) / TRAINER_STATE).read_text())


# ----------------------------------------------------------------------------- saving


def save_checkpoint(
    root: Path,
    step: int,
    *,
    write_weights: Callable[[Path], None],
    optimizer,
    scheduler,
    state: dict,
) -> Path:
    """Write a complete checkpoint for ``step`` atomically and return its folder.

    ``write_weights(folder)`` writes the model or adapter as safetensors into ``folder``;
    ``state`` (JSON-serializable) goes to trainer_state.json together with the RNG states.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_weights(tmp)
        _test_pause("weights", tmp)
        save_optimizer(optimizer, tmp)
        _test_pause("optimizer", tmp)
        _write_json(tmp / SCHEDULER_JSON, _json_safe(scheduler.state_dict()))
        _write_json(tmp / TRAINER_STATE, {**state, "step": step, "rng": rng_state()})
        return commit(tmp, root, step)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def commit(tmp: Path, root: Path, step: int) -> Path:
    """Make the fully written folder ``tmp`` the complete checkpoint ``step``: fsync every file (also in
    subfolders, such as a DCP folder), rename it into place, then write and fsync COMPLETE."""
    for file in sorted(Path(tmp).rglob("*")):
        if file.is_file():
            _fsync_file(file)
        else:
            _fsync_dir(file)
    _fsync_dir(tmp)
    final = Path(root) / checkpoint_name(step)
    if final.exists():  # a stale folder for this step (an interrupted older save): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _test_pause("renamed", final)
    marker = final / COMPLETE
    marker.write_text("complete\n")
    _fsync_file(marker)
    _fsync_dir(final)
    publish(final)
    return final


def _test_pause(stage: str, folder: Path) -> None:
    """The test hook (module docstring): announce ``stage`` of writing ``folder`` and pause there."""
    hook = os.environ.get(TEST_PAUSE_ENV)
    if not hook or hook.split(":", 1)[0] != stage:
        return
    with open(hook.split(":", 1)[1], "a", encoding="utf-8") as note:
        note.write(f"{stage} {folder}\n")
    time.sleep(TEST_PAUSE_S)


def publish(folder: Path) -> str | None:
    """With a shared artifact store, upload the complete checkpoint ``folder`` and write its manifest's
    key beside it (``step-NNNNNN.manifest``); returns the key (None without a shared store).

    A failed upload is logged and leaves no key: training goes on with its local checkpoint, and the
    next checkpoint tries again.
    """
    from oikyo.store import artifacts, manifests

    if not artifacts.is_remote():
        return None
    folder = Path(folder)
    try:
        key = manifests.upload_folder(folder)
    except Exception as error:  # noqa: BLE001 - the local checkpoint stays good; only sharing failed
        logger.warning("could not upload checkpoint %s to the shared store: %s", folder, error)
        return None
    write_manifest_key(folder, key)
    return key


def write_manifest_key(folder: Path, key: str) -> None:
    """Record beside the complete checkpoint ``folder`` that manifest ``key`` holds it (atomically)."""
    folder = Path(folder)
    sidecar = folder.parent / (folder.name + MANIFEST_SUFFIX)
    tmp = folder.parent / f".tmp-{sidecar.name}-{os.getpid()}"
    tmp.write_text(key + "\n")
    _fsync_file(tmp)
    os.replace(tmp, sidecar)


def manifest_key(folder: Path) -> str | None:
    """The shared-store manifest key recorded beside checkpoint ``folder``, if it was uploaded."""
    sidecar = Path(folder).parent / (Path(folder).name + MANIFEST_SUFFIX)
    try:
        return sidecar.read_text().strip() or None
    except OSError:
        return None


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON with sorted keys."""
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


_write_json = write_json


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(value: Any) -> Any:
    """Drop what JSON cannot hold (lambdas in a scheduler's state_dict), keep numbers exact."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items() if _representable(v)}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_json_safe = json_safe


def _representable(value: Any) -> bool:
    if isinstance(value, (dict, list, tuple)):
        return True
    return value is None or isinstance(value, (bool, int, float, str))


# ----------------------------------------------------------------------------- optimizer


def save_optimizer(optimizer, folder: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (param groups and scalar state values)."""
    import torch
    from safetensors.torch import save_file

    state_dict = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            key = f"{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    save_file(tensors, str(Path(folder) / OPTIMIZER_TENSORS))
    _write_json(Path(folder) / OPTIMIZER_JSON, {"param_groups": state_dict["param_groups"], "scalars": scalars})


def load_optimizer(optimizer, folder: Path) -> None:
    """Restore what :func:`save_optimizer` wrote (tensors land on the parameters' device)."""
    from safetensors.torch import load_file

    meta = json.loads((Path(folder) / OPTIMIZER_JSON).read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in load_file(str(Path(folder) / OPTIMIZER_TENSORS)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_scheduler(scheduler, folder: Path) -> None:
    """Restore the scheduler state written at save time."""
    scheduler.load_state_dict(json.loads((Path(folder) / SCHEDULER_JSON).read_text()))


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """Every random stream that training may draw from, as JSON-ready integer lists."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore the streams saved by :func:`rng_state` (CUDA only when both sides have it)."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ----------------------------------------------------------------------------- retention


def best_checkpoint(root: Path) -> tuple[Path | None, float | None]:
    """The complete checkpoint with the lowest recorded eval loss (earliest on ties), and that loss."""
    scored = [(read_state(p).get("eval_loss"), step_of(p), p) for p in list_complete(root)]
    scored = [item for item in scored if item[0] is not None]
    if not scored:
        return None, None
    loss, _, path = min(scored, key=lambda item: (item[0], item[1]))
    return path, loss


def prune(root: Path, keep_best: int, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Delete complete checkpoints except the newest, the ``keep_best`` lowest eval losses and ``keep``."""
    found = list_complete(root)
    if not found:
        return []
    kept = {found[-1].name, *(Path(p).name for p in keep)}
    scored = [(read_state(p).get("eval_loss"), step_of(p), p) for p in found]
    scored = sorted((s for s in scored if s[0] is not None), key=lambda item: (item[0], item[1]))
    kept.update(path.name for _, _, path in scored[:keep_best])
    removed = []
    for path in found:
        if path.name not in kept:
            # The marker goes first: a process killed while deleting leaves an incomplete folder (ignored,
            # then cleaned up), never a "complete" one missing its weights that a later export might pick.
            (path / COMPLETE).unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)
            (path.parent / (path.name + MANIFEST_SUFFIX)).unlink(missing_ok=True)
            removed.append(path)
    return removed
