"""`oikyo workspace backup | restore | check`: online backups, verified restores, integrity checks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.data import versions
from oikyo.errors import OikyoError
from oikyo.store import artifacts, backup, db, integrity
from oikyo.store.models import ModelVersion, Worker


def _import(tmp_path: Path, name: str, n: int = 6):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{name} question {i}?"},
                                                     {"role": "assistant", "content": f"{name} answer {i}."}]}) + "\n"
                            for i in range(n)))
    return versions.import_dataset(path, name=name).version


def _rows(ref: str) -> list[dict]:
    return list(versions.iter_rows(versions.resolve(ref)))


def _workers() -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Worker))


def _add_worker_pair(i: int) -> None:
    """Two rows in one transaction: a consistent copy holds both or neither."""
    with db.session() as s:
        for side in "ab":
            s.add(Worker(id=f"w-{i}-{side}", hostname="test", pid=i, state="idle"))


def _use_home(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("OIKYO_HOME", str(home))
    db.reset_engine()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_backup_while_writing_is_a_point_in_time_and_restores_elsewhere(tmp_path, workspace, monkeypatch):
    dataset = _import(tmp_path, "chat")
    expected_rows = _rows(dataset.id)
    (workspace / "runs" / "run-x").mkdir(parents=True)
    (workspace / "runs" / "run-x" / "train.log").write_text("step 1 loss 2.0\n")
    adapter = workspace.resolve() / "models" / "mv-test"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    with db.session() as s:
        s.add(ModelVersion(id="mv-test", base_model="tiny", kind="adapter", path=str(adapter), lineage={}))
    (workspace / "cache" / "folders").mkdir(parents=True)
    (workspace / "cache" / "folders" / "big").write_bytes(b"rebuildable")
    stop, written = threading.Event(), []

    def writer():
        i = 0
        while not stop.is_set():
            _add_worker_pair(i)
            written.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:  # the writer is well under way
            stop.wait(0.01)
        before = _workers()
        manifest = backup.backup(tmp_path / "bk")
        after = _workers()
    finally:
        stop.set()
        thread.join()
    counted = manifest["database"]["tables"]["workers"]
    assert before <= counted <= after and counted % 2 == 0 and after > before
    assert not list(tmp_path.glob(".bk.partial-*"))
    assert "runs/run-x/train.log" in manifest["files"] and not any(f.startswith("cache/") for f in manifest["files"])
    assert manifest["database"]["dialect"] == "sqlite" and manifest["database"]["revision"]

    fresh = tmp_path / "restored-home"
    _use_home(monkeypatch, fresh)
    summary = backup.restore(tmp_path / "bk")
    assert summary["revision_now"] == manifest["database"]["revision"]
    assert _rows(dataset.id) == expected_rows
    assert _workers() == counted
    assert (fresh / "runs" / "run-x" / "train.log").read_text() == "step 1 loss 2.0\n"
    assert not (fresh / "cache" / "folders" / "big").exists()
    with db.session() as s:  # the recorded folder moved with the workspace
        assert s.get(ModelVersion, "mv-test").path == str(fresh.resolve() / "models" / "mv-test")
    assert summary["paths_rewritten"] == 1
    assert integrity.check() == []


def test_restore_checks_the_backup_and_refuses_to_overwrite(tmp_path, workspace, monkeypatch):
    dataset = _import(tmp_path, "chat")
    backup.backup(tmp_path / "bk")
    with pytest.raises(OikyoError, match="already exists"):
        backup.backup(tmp_path / "bk")
    refused = invoke("workspace", "restore", str(tmp_path / "bk"))  # into the live, non-empty workspace
    assert refused.exit_code == 2 and "not empty" in refused.output and "--force" in refused.output
    _add_worker_pair(1)
    forced = invoke("workspace", "restore", str(tmp_path / "bk"), "--force")
    assert forced.exit_code == 0, forced.output
    assert _workers() == 0 and _rows(dataset.id)  # back to the backup's point in time

    blob = tmp_path / "bk" / "artifacts" / dataset.artifact
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    result = invoke("workspace", "restore", str(tmp_path / "bk"), "--into", str(fresh))
    assert result.exit_code == 2 and "damaged" in result.output and dataset.artifact in result.output
    assert not (fresh / "oikyo.db").exists() and not (fresh / "artifacts").exists()
    assert invoke("workspace", "restore", str(tmp_path)).exit_code == 2  # not a backup at all


def test_check_finds_corrupted_orphaned_and_missing(tmp_path, workspace):
    kept = _import(tmp_path, "kept")
    assert invoke("workspace", "check").exit_code == 0
    damaged, lost = _import(tmp_path, "damaged"), _import(tmp_path, "lost")
    artifacts.cache_path(damaged.artifact).write_bytes(b"not the parquet it was")
    artifacts.cache_path(lost.artifact).unlink()
    orphan = artifacts.put_bytes(b"nothing names me", ".bin")
    with db.session() as s:  # a model version whose folder was deleted by hand
        s.add(ModelVersion(id="mv-gone", base_model="tiny", kind="adapter", path=str(tmp_path / "nowhere"), lineage={}))

    result = invoke("workspace", "check", "--json")
    assert result.exit_code == 1, result.output
    found = {(p["kind"], p["subject"]) for p in json.loads(result.output)["problems"]}
    assert found == {("corrupted", damaged.artifact), ("orphan", orphan),
                     ("missing", f"dataset version {lost.id} (lost)"), ("missing", "model version mv-gone")}
    table = invoke("workspace", "check")
    assert table.exit_code == 1 and "orphan" in table.output and lost.id in table.output

    young = invoke("workspace", "check", "--fix-orphans", "--json")  # an hour's grace: a fresh blob stays
    assert json.loads(young.output)["removed_orphans"] == [] and artifacts.cache_path(orphan).exists()
    assert integrity.remove_orphans(integrity.check(), min_age_s=0) == [orphan]
    assert not artifacts.cache_path(orphan).exists() and artifacts.cache_path(kept.artifact).exists()


def test_backup_leaves_out_a_corrupted_blob_and_exits_1(tmp_path, workspace, monkeypatch):
    dataset = _import(tmp_path, "chat")
    artifacts.cache_path(dataset.artifact).write_bytes(b"garbage")
    walk = backup._walk  # a file pruned between listing and copying (a training run's old checkpoint)
    monkeypatch.setattr(backup, "_walk", lambda home: [*walk(home), ("runs/r/gone.bin", home / "runs/r/gone.bin")])
    result = invoke("workspace", "backup", str(tmp_path / "bk"))
    assert result.exit_code == 1 and "corrupted" in result.output
    manifest = backup.read_manifest(tmp_path / "bk")
    assert manifest["corrupted"] == [f"artifacts/{dataset.artifact}"]
    assert not (tmp_path / "bk" / "artifacts" / dataset.artifact).exists() and "runs/r/gone.bin" not in manifest["files"]
    (workspace / "models").mkdir(exist_ok=True)
    inside = invoke("workspace", "backup", str(workspace / "models" / "bk"))
    assert inside.exit_code == 2 and "inside the workspace" in inside.output


def test_a_crashed_backup_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    _import(tmp_path, "chat")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(backup, "_copy_files", crash)
    with pytest.raises(OSError, match="disk full"):
        backup.backup(tmp_path / "bk")
    assert not (tmp_path / "bk").exists() and not list(tmp_path.glob(".bk.partial-*"))


def test_cli_help_and_bad_input():
    result = invoke("workspace", "--help")
    assert result.exit_code == 0 and all(name in result.output for name in ("backup", "restore", "check"))
    assert "cache/" in invoke("workspace", "backup", "--help").output
    assert invoke("workspace", "backup").exit_code == 2  # DEST is required


@pytest.mark.postgres
def test_postgres_backup_and_restore(tmp_path, postgres_url, monkeypatch):
    try:
        backup.find_pg_tool("pg_dump")
        backup.find_pg_tool("pg_restore")
    except OikyoError as error:
        pytest.skip(str(error))
    dataset = _import(tmp_path, "chat")
    expected = _rows(dataset.id)
    _add_worker_pair(1)
    manifest = backup.backup(tmp_path / "bk")
    assert manifest["database"]["dialect"] == "postgresql" and manifest["database"]["tables"]["workers"] == 2
    _add_worker_pair(2)

    fresh = tmp_path / "fresh-home"
    _use_home(monkeypatch, fresh)
    with pytest.raises(OikyoError, match="not empty"):
        backup.restore(tmp_path / "bk")
    summary = backup.restore(tmp_path / "bk", force=True)
    assert summary["database"] == "postgresql" and summary["tables"]["workers"] == 2
    db.reset_engine()
    assert _workers() == 2 and _rows(dataset.id) == expected
