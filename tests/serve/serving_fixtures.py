"""Fixtures for the deployment tests (API, router, processes): a tiny model, LoRA adapters, servers.

Imported by the test_api_* / test_deploy_* / test_ab / test_keys modules with
``from serving_fixtures import *`` (tests/serve/conftest.py belongs to the engine tests).

- ``api_model_dir``: a tiny Llama (2 layers, hidden 32, the bundled tokenizer and chat template)
  whose weights are re-drawn with std 0.3 so greedy text varies token to token (the shared tiny
  model repeats one token, which would hide mix-ups between adapters or choices).
- ``api_adapter_dirs``: two random LoRA adapters (r=4) on it, which change its outputs.
- ``api_engine``: one started engine for the session (tests share it, as replicas share one).
- ``versions``: the adapters (and the base) registered as model versions in the test's workspace.
- ``replica``: the OpenAI app over ``api_engine`` in a uvicorn thread on a free loopback port,
  authenticating with store keys, plus a fresh key: ``replica.client()`` is an ``openai.OpenAI``.
- ``routed``: a router (split 50/50 between the two adapters, requests logged) in front of an
  in-process replica that trusts only the router's token.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROUTER_TOKEN = "router-to-replica-test-token"
DEPLOYMENT = "bot"


class ThreadServer:
    """A uvicorn server for ``app`` in a daemon thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def random_model_dir(folder: Path, tokenizer_dir: Path, seed: int = 7, **tiny) -> Path:
    """A tiny Llama (``tiny``: :func:`oikyo.models.loading.tiny_model_dir` options) in ``folder`` whose
    weights are re-drawn with std 0.3 from ``seed``, so that greedy text varies token to token."""
    import torch

    from oikyo.models.loading import load_model, tiny_model_dir

    folder = tiny_model_dir(folder, tokenizer_dir, **tiny)
    model = load_model(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(folder)
    return folder.resolve()


def random_adapter_dirs(root: Path, model_dir: Path) -> dict[str, Path]:
    """Two random LoRA adapters (r=4, every linear layer), "support" and "sales", on ``model_dir``, saved under ``root``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from oikyo.models.loading import load_model

    out = {}
    for i, name in enumerate(("support", "sales")):
        config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        peft_model = get_peft_model(load_model(model_dir), config)
        generator = torch.Generator().manual_seed(200 + i)
        with torch.no_grad():
            for pname, parameter in peft_model.named_parameters():
                if "lora_" in pname:  # lora_B starts at zero: perturb both so the adapter changes outputs
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.4)
        peft_model.save_pretrained(root / name)
        out[name] = (root / name).resolve()
    return out


@pytest.fixture(scope="session")
def api_model_dir(tmp_path_factory, bundled_tokenizer_dir) -> Path:
    return random_model_dir(tmp_path_factory.mktemp("api-model") / "tiny", bundled_tokenizer_dir)


@pytest.fixture(scope="session")
def api_adapter_dirs(tmp_path_factory, api_model_dir) -> dict[str, Path]:
    return random_adapter_dirs(tmp_path_factory.mktemp("api-adapters"), api_model_dir)


@pytest.fixture(scope="session")
def api_engine(api_model_dir):
    from oikyo.serve.engine.core import GenerationEngine

    engine = GenerationEngine(api_model_dir, max_batch_size=8, max_adapters=4, num_threads=1)
    engine.start()
    yield engine
    engine.stop(drain=False, timeout=10)


def register_version(path: Path, base_model: str, kind: str = "adapter", version_id: str | None = None) -> str:
    """A model version row for ``path`` (no run: made by hand for the test)."""
    import secrets

    from oikyo.store import db
    from oikyo.store.models import ModelVersion, utcnow

    version_id = version_id or f"mv-{secrets.token_hex(4)}"
    with db.session() as s:
        s.add(ModelVersion(id=version_id, run_id=None, base_model=base_model, kind=kind, path=str(path), lineage={},
                           created_at=utcnow()))
    return version_id


@pytest.fixture
def versions(workspace, api_model_dir, api_adapter_dirs) -> dict[str, str]:
    """{"support": mv id, "sales": mv id} registered on the base folder ``api_model_dir``."""
    return {name: register_version(path, str(api_model_dir)) for name, path in api_adapter_dirs.items()}


@dataclass
class Served:
    url: str
    key: str
    engine: object
    app: object

    def client(self, key: str | None = None, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0, timeout=60, **kwargs)


BASE_ID = "tiny-base"


def _names(api_model_dir):
    from oikyo.serve.gateway.served_models import ModelSpec, ServedNames

    base = ModelSpec(id=BASE_ID, kind="base", load_dir=str(api_model_dir), base_model=str(api_model_dir))
    return ServedNames(str(api_model_dir), [base])


@pytest.fixture
def replica(api_engine, api_model_dir, versions):
    """The replica app over the shared engine, authenticating with store keys; and a fresh key."""
    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.httpapi import store_keys
    from oikyo.serve.gateway.replica import create_replica_app

    app = create_replica_app(api_engine, _names(api_model_dir), authenticate=store_keys())
    server = ThreadServer(app)
    _, secret = keys.create("test")
    yield Served(server.url, secret, api_engine, app)
    server.stop()


@pytest.fixture
def routed(api_engine, api_model_dir, versions):
    """A router splitting 50/50 between the two adapters (requests logged), before an in-process replica."""
    from oikyo.serve.gateway import keys
    from oikyo.serve.gateway.ab import Variant
    from oikyo.serve.gateway.httpapi import shared_token, store_keys
    from oikyo.serve.gateway.replica import create_replica_app
    from oikyo.serve.gateway.replicas import PoolSpec, StaticPool
    from oikyo.serve.gateway.router import Routing, create_router_app
    from oikyo.serve.gateway.served_models import ModelSpec

    names = _names(api_model_dir)
    replica_server = ThreadServer(create_replica_app(api_engine, names, authenticate=shared_token(ROUTER_TOKEN),
                                                     blocking_auth=False))
    load_dir = str(api_model_dir)
    specs = [ModelSpec(id=mv, kind="adapter", load_dir=load_dir, adapter_dir=None, base_model=load_dir)
             for mv in versions.values()]
    variants = [Variant(label=mv, model=mv, weight=50.0) for mv in versions.values()]
    pool = StaticPool(PoolSpec(name=specs[0].id, load_dir=load_dir, models=specs), [replica_server.url])
    routing = Routing(DEPLOYMENT, variants, {load_dir: pool}, {v.label: load_dir for v in variants}, {load_dir: names})
    app = create_router_app(DEPLOYMENT, routing, authenticate=store_keys(), token=ROUTER_TOKEN, log_requests=True)
    router_server = ThreadServer(app)
    _, secret = keys.create("test")
    yield Served(router_server.url, secret, api_engine, app)
    router_server.stop()
    replica_server.stop()


def chat(client, model: str, content: str = "What is the capital of France?", **kwargs):
    params = {"max_tokens": 12, "temperature": 0, **kwargs}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **params)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it is truthy (returns its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


__all__ = ["ThreadServer", "Served", "api_model_dir", "api_adapter_dirs", "api_engine", "versions", "replica",
           "routed", "register_version", "chat", "wait_for", "random_model_dir", "random_adapter_dirs", "BASE_ID",
           "DEPLOYMENT", "ROUTER_TOKEN"]


def metric_sample(body: str, name: str, **labels) -> float | None:
    """The value of the sample ``name`` with exactly ``labels`` in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None
