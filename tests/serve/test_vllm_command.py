"""The vLLM replica's command line (``--engine vllm``), built without vLLM or a GPU.

vLLM itself cannot run on the CPU test machine; these tests check what oikyo asks of it: the LoRA
rank limit it accepts, every adapter as a LoRA module, loopback only, the router's key.
"""

from __future__ import annotations

import json
import sys

import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import register_version

from oikyo.errors import OikyoError
from oikyo.serve import vllm_engine


def _adapter(folder, r, rank_pattern=None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
                                                            "rank_pattern": rank_pattern or {}}))
    return str(folder)


def test_the_rank_limit_is_the_smallest_value_vllm_accepts_that_covers_every_adapter(tmp_path):
    assert vllm_engine.max_lora_rank({}) == 1
    assert vllm_engine.max_lora_rank({"a": _adapter(tmp_path / "a", 8)}) == 8
    assert vllm_engine.max_lora_rank({"b": _adapter(tmp_path / "b", 12)}) == 16
    # rank_pattern can raise one module's rank above the adapter's r
    mixed = {"a": str(tmp_path / "a"), "c": _adapter(tmp_path / "c", 16, {"q_proj": 48})}
    assert vllm_engine.max_lora_rank(mixed) == 64
    assert vllm_engine.max_lora_rank({"d": _adapter(tmp_path / "d", 300)}) == 320
    assert all(r in vllm_engine.VLLM_LORA_RANKS for r in (1, 8, 16, 64, 320, 512))


def test_a_rank_vllm_cannot_serve_or_an_unreadable_config_is_a_clear_error(tmp_path):
    with pytest.raises(OikyoError, match="rank 1024; vLLM serves ranks up to 512.*--engine native"):
        vllm_engine.max_lora_rank({"big": _adapter(tmp_path / "big", 1024)})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    with pytest.raises(OikyoError, match="adapter broken: cannot read the rank"):
        vllm_engine.max_lora_rank({"broken": str(tmp_path / "broken")})
    with pytest.raises(OikyoError, match="adapter gone: cannot read the rank"):
        vllm_engine.max_lora_rank({"gone": str(tmp_path / "missing")})


def test_the_command_serves_every_adapter_on_loopback_behind_the_key(tmp_path):
    adapters = {f"mv-{i}": _adapter(tmp_path / f"a{i}", 16 if i else 32) for i in range(10)}
    cmd = vllm_engine.command("/models/base", ["mv-base"], adapters, port=8123, api_key="secret")
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]

    def value(flag):
        return cmd[cmd.index(flag) + 1]

    assert value("--model") == "/models/base"
    assert value("--host") == "127.0.0.1" and value("--port") == "8123" and value("--api-key") == "secret"
    assert value("--served-model-name") == "mv-base"
    assert "--enable-lora" in cmd
    assert value("--max-loras") == str(vllm_engine.MAX_GPU_LORAS)  # 10 adapters, 8 on the GPU at once
    assert value("--max-lora-rank") == "32"
    modules = cmd[cmd.index("--lora-modules") + 1:]
    assert modules == [f"{name}={path}" for name, path in adapters.items()]
    assert "--disable-log-requests" not in cmd  # deprecated in vLLM; its request log is off by default


def test_a_base_model_alone_gets_no_lora_flags():
    cmd = vllm_engine.command("/models/base", ["base", "alias"], {}, port=1, api_key="k")
    assert "--enable-lora" not in cmd and "--max-lora-rank" not in cmd
    assert cmd[cmd.index("--served-model-name") + 1:] == ["base", "alias"]


def test_deploying_an_adapter_vllm_cannot_serve_stops_before_anything_starts(
        versions, api_model_dir, api_adapter_dirs, tmp_path, monkeypatch):
    import shutil

    from oikyo.serve import deployments

    big = tmp_path / "big-rank"
    shutil.copytree(api_adapter_dirs["support"], big)
    config = json.loads((big / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps({**config, "r": 1024}))
    register_version(big, str(api_model_dir))
    monkeypatch.setattr(vllm_engine, "check_available", lambda: None)  # as if on a CUDA machine with vLLM

    with pytest.raises(OikyoError, match="rank 1024"):
        deployments.deploy(versions["support"], name="on-vllm", engine="vllm", port=0)
    record = deployments.get("on-vllm")
    assert record.engine == "vllm" and deployments.status(record) == "stopped"
