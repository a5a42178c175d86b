"""``--engine llamacpp`` end to end: a deployment whose replicas are llama.cpp's OpenAI servers over
GGUF conversions, driven with the official openai client through oikyo's router.

llama.cpp is the environment ``scripts/install-llamacpp.sh`` makes (``.venv-llamacpp``, with the
server's packages and llama.cpp's own ``llama-server``), which ``scripts/test.sh`` installs first;
``OIKYO_LLAMACPP_PYTHON`` may name another. The tests skip, saying so, where neither exists. The
deployment test runs twice: with ``llama-server`` as the replicas (what the engine runs where it is
built) and with llama-cpp-python's server (its fallback, ``OIKYO_LLAMA_SERVER=python``).

- an interpreter without llama.cpp's server, or an unknown --gguf-quant, is a clear error before
  anything starts, and leaves no record;
- the base model (deployed by its folder) and every adapter version on it answer under their ids;
  the adapters really reach llama.cpp (each answers differently from the other and from the base, the
  same on every call and after a restart);
- the deployment's name routes to its variant, keys are required (the replica itself takes only the
  router's secret, which is in no command line), and stopping ends the llama.cpp processes;
- llama-server: concurrent requests for the base and both adapters, sharing one replica's slots, each
  get the answer they get alone.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import random_adapter_dirs, random_model_dir, register_version, wait_for
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.errors import OikyoError
from oikyo.models import export_gguf
from oikyo.serve.gateway import deployments, keys, llamacpp_replicas

REPO = Path(__file__).resolve().parents[2]
PROMPT = "What is the capital of France?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llamacpp_python() -> str:
    found = os.environ.get(export_gguf.PYTHON_ENV) or str(REPO / export_gguf.ENV_DIR / "bin" / "python")
    try:
        llamacpp_replicas.check_available(found)
    except OikyoError as error:
        pytest.skip(f"llama.cpp's server is not usable here ({error})")
    return found


@pytest.fixture(scope="module")
def llamacpp_model(tmp_path_factory, bundled_tokenizer_dir) -> tuple[Path, dict[str, Path]]:
    """A tiny random Llama with the bundled tokenizer (llama.cpp's converter knows it) and two adapters."""
    model = random_model_dir(tmp_path_factory.mktemp("llamacpp-model") / "tiny", bundled_tokenizer_dir, hidden=64)
    return model, random_adapter_dirs(tmp_path_factory.mktemp("llamacpp-adapters"), model)


@pytest.fixture(params=["llama-server", "python"])
def server(request, llamacpp_python, monkeypatch) -> str:
    """The replicas' program: llama-server (beside the environment's Python) or llama-cpp-python's server;
    the marker its command line holds."""
    if request.param == "python":
        monkeypatch.setenv(llamacpp_replicas.SERVER_ENV, "python")
        return "llama_cpp.server"
    monkeypatch.delenv(llamacpp_replicas.SERVER_ENV, raising=False)
    if llamacpp_replicas.check_available(llamacpp_python).server is None:
        pytest.skip(f"no llama-server beside {llamacpp_python}: scripts/install-llamacpp.sh builds it with cmake "
                    "(scripts/test.sh does not: OIKYO_LLAMA_SERVER_BUILD=0, only a cached build is copied)")
    return "llama-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_oikyo_refuses_clearly_where_llama_cpp_s_server_is_missing(llamacpp_python, workspace, llamacpp_model,
                                                                   tmp_path):
    found = llamacpp_replicas.check_available(llamacpp_python)
    assert found.python == llamacpp_python and found.version[0].isdigit()
    with pytest.raises(OikyoError, match="--gguf-quant must be one of"):
        llamacpp_replicas.check_quant("q2_k")

    bare = tmp_path / "bare"  # a Python without llama.cpp
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    model_dir, adapters = llamacpp_model
    version = register_version(adapters["support"], str(model_dir))
    runner = CliRunner()
    for flags, message in ((["--llamacpp-python", str(bare / "bin" / "python")], "is not the Python of a llama.cpp"),
                           (["--llamacpp-python", llamacpp_python, "--gguf-quant", "q2_k"], "--gguf-quant must be")):
        result = runner.invoke(app, ["deploy", version, "--name", "refused", "--engine", "llamacpp", *flags,
                                     "--detach"])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    assert deployments.list_deployments() == []


def test_a_llamacpp_deployment_serves_the_base_and_every_adapter_through_the_router(llamacpp_python, server,
                                                                                     workspace, llamacpp_model):
    model_dir, adapters = llamacpp_model
    versions = {name: register_version(path, str(model_dir)) for name, path in adapters.items()}
    pids: list[int] = []
    try:
        # The base folder first (weight 0: served by its path, no traffic from the deployment's name), so the
        # pool is named by a path, as when a folder is deployed.
        info = deployments.deploy(None, name="on-llamacpp", split=f"{model_dir}=0,{versions['support']}=1",
                                  engine="llamacpp", port=_free_port(),
                                  settings={"llamacpp_python": llamacpp_python, "gguf_quant": "f32"}, wait_s=600)
        assert info["status"] == "running" and info["engine"] == "llamacpp"
        _, secret = keys.create("llamacpp-test")
        client = openai.OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=120)
        assert {"on-llamacpp", versions["support"], versions["sales"]} <= {m.id for m in client.models.list().data}

        # Each adapter answers under its id, the same on every call; the two differ (llama.cpp applies each).
        texts = {}
        for name, version in versions.items():
            answer = client.completions.create(model=version, prompt=PROMPT, max_tokens=12, temperature=0)
            texts[name] = answer.choices[0].text
            assert texts[name] and 0 < answer.usage.completion_tokens <= 12, answer
        base = client.completions.create(model=str(model_dir), prompt=PROMPT, max_tokens=12, temperature=0)
        assert base.choices[0].text and texts["support"] != texts["sales"]
        assert base.choices[0].text not in (texts["support"], texts["sales"])
        for name, version in versions.items():  # back and forth between the adapters
            again = client.completions.create(model=version, prompt=PROMPT, max_tokens=12, temperature=0)
            assert again.choices[0].text == texts[name] and again.model == version, name
        if server == "llama-server":  # one process, parallel slots: the adapters' requests run side by side
            asked = [*versions.values(), str(model_dir)] * 3
            expected = [*texts.values(), base.choices[0].text] * 3
            with ThreadPoolExecutor(len(asked)) as pool:
                found = list(pool.map(lambda m: client.completions.create(
                    model=m, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text, asked))
            assert found == expected

        # The deployment's name routes to its variant (header and body), under the router's response id.
        raw = client.completions.with_raw_response.create(model="on-llamacpp", prompt=PROMPT, max_tokens=12,
                                                          temperature=0)
        answer = raw.parse()
        assert raw.headers["x-oikyo-variant"] == versions["support"] == answer.to_dict()["variant"]
        assert answer.choices[0].text == texts["support"] and answer.id == raw.headers["x-oikyo-response-id"]
        chat = client.chat.completions.create(model="on-llamacpp", messages=[{"role": "user", "content": PROMPT}],
                                              max_tokens=8, temperature=0)
        assert chat.choices[0].message.content and chat.usage.completion_tokens <= 8

        # Keys: the router's are required; the replica answers only the router's secret, which is in a 0600
        # file (llama-server's key file, the Python server's config) and in no command line.
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=info["url"], api_key="wrong", max_retries=0).models.list()
        replicas = [r for rs in deployments.show("on-llamacpp")["replica_processes"].values() for r in rs]
        pids += [r["pid"] for r in replicas]
        assert len(replicas) == 1 and httpx.get(replicas[0]["url"] + "/v1/models", timeout=30).status_code == 401
        [secret_file] = deployments.deploy_dir("on-llamacpp").glob(
            "llamacpp-*.key" if server == "llama-server" else "llamacpp-*.json")
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        cmdline = Path(f"/proc/{replicas[0]['pid']}/cmdline").read_bytes().decode()
        assert server in cmdline and "api_key" not in cmdline
        router_secret = (secret_file.read_text().strip() if server == "llama-server"
                         else json.loads(secret_file.read_text())["api_key"])
        assert router_secret not in cmdline
        assert httpx.get(replicas[0]["url"] + "/v1/models", headers={"Authorization": f"Bearer {router_secret}"},
                         timeout=30).status_code == 200
        # The conversions are kept in the workspace's cache, keyed by their source folders: a restart
        # converts nothing and answers the same.
        cached = {p: p.stat().st_mtime_ns for p in (workspace / "cache" / "gguf").glob("*.gguf")}
        assert len(cached) == 3, cached  # the base (f32) and the two adapters
        deployments.stop("on-llamacpp", timeout_s=60)
        assert not any(deployments._alive(p, server) for p in pids)
        info = deployments.deploy(name="on-llamacpp", wait_s=600)
        assert info["status"] == "running"
        again = client.completions.create(model=versions["sales"], prompt=PROMPT, max_tokens=12, temperature=0)
        assert again.choices[0].text == texts["sales"]
        assert {p: p.stat().st_mtime_ns for p in (workspace / "cache" / "gguf").glob("*.gguf")} == cached
        pids += [r["pid"] for rs in deployments.show("on-llamacpp")["replica_processes"].values() for r in rs]
    finally:
        deployments.stop("on-llamacpp", timeout_s=60)
    assert deployments.status(deployments.get("on-llamacpp")) == "stopped"
    wait_for(lambda: not any(deployments._alive(p, server) for p in pids), timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(info["url"].removesuffix("/v1") + "/health", timeout=5)
