"""A full or read-only disk during an import, a checkpoint and an export (issue 22).

Real faults, not mocks: the workspace (or the export folder, or the checkpoint folder) lives on a
small tmpfs, filled to the brim with a filler file or remounted read-only, so the kernel itself
answers ENOSPC or EROFS part-way through the write. Each case checks what a user would see: a clear
one-line error at the CLI (exit 2, no traceback), nothing half-written left visible (no dataset
version, no export file, no checkpoint folder without COMPLETE, no scratch files), and the earlier
state intact and still usable, while the disk is still full and after it is freed. The failing
command runs as ``oikyo`` in a subprocess; setting up and checking the state run in this process.

Mounting needs root and CAP_SYS_ADMIN (a container may refuse): without them the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from battery import size

GOOD = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}


class Mounts:
    """Small tmpfs mounts made by one test, unmounted at its end."""

    def __init__(self, base: Path):
        self.base, self.made = base, []

    def tmpfs(self, name: str, size_kb: int) -> Path:
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}")
        self.made.append(path)
        return path

    def remount(self, path: Path, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)

    def unmount_all(self) -> None:
        for path in reversed(self.made):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = Mounts(tmp_path / "mnt")
    yield made
    made.unmount_all()


def fill(folder: Path, leave_kb: int = 0) -> Path:
    """Fill the file system of ``folder`` up, leaving about ``leave_kb`` KiB free; returns the filler."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * (64 << 10)
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    total = filler.stat().st_size
    os.truncate(filler, max(0, total - leave_kb * 1024))
    return filler


def oikyo(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OIKYO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def clean_error(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 with one plain error naming each of ``words``, and no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    text = " ".join(done.stderr.split())  # a terminal-width console may wrap the line
    assert text.startswith("error: ") and all(w in text for w in words), done.stderr


def dataset(path: Path, rows: int, width: int = 0) -> Path:
    """A JSONL chat dataset; ``width`` characters of incompressible text per answer."""
    with open(path, "w") as f:
        for i in range(rows):
            answer = os.urandom(width // 2).hex() if width else f"Hello number {i}!"
            f.write(json.dumps({"messages": [GOOD["messages"][0], {"role": "assistant", "content": answer}]}) + "\n")
    return path


@pytest.fixture
def use_home(monkeypatch):
    """Point this process's workspace at ``home`` (a fresh database engine for it)."""
    from oikyo.store import db

    def use(home: Path) -> Path:
        monkeypatch.setenv("OIKYO_HOME", str(home))
        db.reset_engine()
        return home

    return use


def import_here(path: Path):
    from oikyo.data import versions

    return versions.import_dataset(path).version


def versions_here() -> list[str]:
    """The stored versions' ids, read through a fresh database connection."""
    from oikyo.data import versions
    from oikyo.store import db

    db.reset_engine()
    return [v.id for v in versions.list_versions()]


def scratch_left(home: Path) -> list[Path]:
    tmp = home / "tmp"
    return ([p for p in tmp.rglob("*") if p.is_file()] if tmp.is_dir() else []) + list(home.rglob("*.partial"))


def test_import_on_a_full_disk(mounts, tmp_path, use_home):
    from oikyo.data import versions

    disk = mounts.tmpfs("ws", size(6, 24) * 1024)  # room for the big file once the filler is gone
    home = use_home(disk / "home")
    earlier = import_here(dataset(tmp_path / "small.jsonl", 20))
    big = dataset(tmp_path / "big.jsonl", size(400, 4000), width=2000)  # incompressible: > the space left
    filler = fill(disk, leave_kb=256)

    done = oikyo("data", "import", str(big), "--no-report", home=home)
    clean_error(done, "could not import big.jsonl: no space is left on the device", "no dataset version was stored")
    assert not scratch_left(home), scratch_left(home)
    assert versions_here() == [earlier.id]  # readable while the disk is still full
    assert [row["messages"][1]["content"] for row in versions.iter_rows(earlier)][-1] == "Hello number 19!"
    filler.unlink()
    assert import_here(big).rows == size(400, 4000)  # space again: the same file imports


def test_import_into_a_read_only_workspace(mounts, tmp_path, use_home):
    from oikyo.data.export import export_version
    from oikyo.store import db

    disk = mounts.tmpfs("ws", 8 * 1024)
    home = use_home(disk / "home")
    earlier = import_here(dataset(tmp_path / "small.jsonl", 20))
    db.reset_engine()  # no file of the workspace open for writing: the remount needs that
    mounts.remount(disk, "ro")

    done = oikyo("data", "import", str(dataset(tmp_path / "other.jsonl", 30)), "--no-report", home=home)
    clean_error(done, "could not import other.jsonl: the file system is read-only", "no dataset version was stored")
    mounts.remount(disk, "rw")
    assert versions_here() == [earlier.id]
    assert not scratch_left(home), scratch_left(home)
    path, count = export_version(earlier.id, "openai", tmp_path / "e.jsonl")
    assert count == 20 and len(path.read_text().splitlines()) == 20


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_export_to_a_full_or_read_only_disk(mounts, tmp_path, workspace, fault):
    home = workspace
    version = import_here(dataset(tmp_path / "d.jsonl", size(300, 3000), width=2000)).id
    target = mounts.tmpfs("out", 4 * 1024)
    out = target / "d.jsonl"
    out.write_text("an earlier export\n")  # the state that must survive
    if fault == "full":
        fill(target, leave_kb=128)
    else:
        mounts.remount(target, "ro")

    done = oikyo("data", "export", version, "--to", "openai", "--out", str(out), home=home)
    reason = "no space is left on the device" if fault == "full" else "the file system is read-only"
    clean_error(done, reason, f"nothing was written to {out}")
    assert out.read_text() == "an earlier export\n"
    assert sorted(p.name for p in target.iterdir()) == sorted(["d.jsonl"] + (["filler"] if fault == "full" else []))


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_checkpoint_on_a_full_or_read_only_disk(mounts, tmp_path, fault):
    import torch

    from oikyo.jobs import failures
    from oikyo.train import checkpoints as ckpt

    torch.manual_seed(0)
    model = torch.nn.Linear(256, size(256, 1024))  # the full run's weights and moments: ~8 MB per checkpoint
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(4, 256)).sum().backward()
    optimizer.step()

    def write_weights(folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))

    def save(step: int) -> Path:
        return ckpt.save_checkpoint(root, step, write_weights=write_weights, optimizer=optimizer,
                                    scheduler=scheduler, state={"epoch": 0})

    disk = mounts.tmpfs("run", 40 * 1024)
    root = disk / "checkpoints"
    earlier = save(1)
    weights = (earlier / "model.safetensors").read_bytes()
    if fault == "full":
        fill(disk, leave_kb=size(300, 2000))  # room for part of the next checkpoint, not all of it
    else:
        mounts.remount(disk, "ro")

    with pytest.raises(Exception) as failed:  # an OSError, or safetensors' own error that wraps one
        save(2)
    reason = failures.describe(failed.value)
    assert ("no space is left on the device" if fault == "full" else "the file system is read-only") in reason
    assert "checkpoints written before are kept" in reason and failures.is_user_error(failed.value)
    if fault == "read-only":
        mounts.remount(disk, "rw")
    assert [p.name for p in root.iterdir()] == ["step-000001"]  # no temp folder, no step-000002
    assert ckpt.latest_complete(root) == earlier and ckpt.read_state(earlier)["step"] == 1
    assert (earlier / "model.safetensors").read_bytes() == weights
    fresh = torch.optim.AdamW(torch.nn.Linear(256, model.out_features).parameters(), lr=1e-3)
    ckpt.load_optimizer(fresh, earlier)  # still usable: the optimizer state loads back
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_model_folder_export_on_a_full_disk(mounts, tmp_path):
    from oikyo.jobs import exports
    from oikyo.store.disk import DiskError

    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(os.urandom(3 << 20))
    target = mounts.tmpfs("exports", 2 * 1024)
    with pytest.raises(DiskError, match="could not export to .*: no space is left on the device.*no folder was written"):
        exports._copy_folder(source, target / "hf")
    assert list(target.iterdir()) == []  # no half-copied folder, under its name or another
