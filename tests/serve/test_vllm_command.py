"""The vLLM replica's command line (``--engine vllm``), built without vLLM.

What oikyo asks of vLLM, for any device: the LoRA rank limit it accepts, every adapter as a LoRA
module, loopback only, the router's key, the user's flags, the CPU's KV cache size. The engine runs
for real in test_vllm_engine.py.
"""

from __future__ import annotations

import json
import sys

import pytest
from serving_fixtures import *  # noqa: F401,F403
from serving_fixtures import register_version

from oikyo.errors import OikyoError
from oikyo.serve.gateway import vllm_replicas


def _adapter(folder, r, rank_pattern=None):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
                                                            "rank_pattern": rank_pattern or {}}))
    return str(folder)


def test_the_rank_limit_is_the_smallest_value_vllm_accepts_that_covers_every_adapter(tmp_path):
    assert vllm_replicas.max_lora_rank({}) == 1
    assert vllm_replicas.max_lora_rank({"a": _adapter(tmp_path / "a", 8)}) == 8
    assert vllm_replicas.max_lora_rank({"b": _adapter(tmp_path / "b", 12)}) == 16
    # rank_pattern can raise one module's rank above the adapter's r
    mixed = {"a": str(tmp_path / "a"), "c": _adapter(tmp_path / "c", 16, {"q_proj": 48})}
    assert vllm_replicas.max_lora_rank(mixed) == 64
    assert vllm_replicas.max_lora_rank({"d": _adapter(tmp_path / "d", 300)}) == 320
    assert all(r in vllm_replicas.VLLM_LORA_RANKS for r in (1, 8, 16, 64, 320, 512))


def test_a_rank_vllm_cannot_serve_or_an_unreadable_config_is_a_clear_error(tmp_path):
    with pytest.raises(OikyoError, match="rank 1024; vLLM serves ranks up to 512.*--engine native"):
        vllm_replicas.max_lora_rank({"big": _adapter(tmp_path / "big", 1024)})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    with pytest.raises(OikyoError, match="adapter broken: cannot read the rank"):
        vllm_replicas.max_lora_rank({"broken": str(tmp_path / "broken")})
    with pytest.raises(OikyoError, match="adapter gone: cannot read the rank"):
        vllm_replicas.max_lora_rank({"gone": str(tmp_path / "missing")})


def test_the_command_serves_every_adapter_on_loopback_behind_the_key(tmp_path):
    adapters = {f"mv-{i}": _adapter(tmp_path / f"a{i}", 16 if i else 32) for i in range(10)}
    cmd = vllm_replicas.command("/models/base", ["mv-base"], adapters, port=8123)
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]

    def value(flag):
        return cmd[cmd.index(flag) + 1]

    assert value("--model") == "/models/base"
    assert value("--host") == "127.0.0.1" and value("--port") == "8123"
    # the router's key goes in the environment: not in the process list, and "-abc" is no flag there
    env = vllm_replicas.environment("-secret")
    assert "--api-key" not in cmd and env["VLLM_API_KEY"] == "-secret"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["HF_HUB_OFFLINE"] == "1"  # nothing goes out at run time
    assert value("--served-model-name") == "mv-base"
    assert "--enable-lora" in cmd
    assert value("--max-loras") == str(vllm_replicas.MAX_GPU_LORAS)  # 10 adapters, 8 on the GPU at once
    assert value("--max-lora-rank") == "32"
    modules = cmd[cmd.index("--lora-modules") + 1:]
    assert modules == [f"{name}={path}" for name, path in adapters.items()]
    assert "--disable-log-requests" not in cmd  # deprecated in vLLM; its request log is off by default


def test_a_base_model_alone_gets_no_lora_flags():
    cmd = vllm_replicas.command("/models/base", ["base", "alias"], {}, port=1)
    assert "--enable-lora" not in cmd and "--max-lora-rank" not in cmd
    assert cmd[cmd.index("--served-model-name") + 1:] == ["base", "alias"]


def test_deploying_an_adapter_vllm_cannot_serve_stops_before_anything_starts(
        versions, api_model_dir, api_adapter_dirs, tmp_path, monkeypatch):
    import shutil

    from oikyo.serve.gateway import deployments

    big = tmp_path / "big-rank"
    shutil.copytree(api_adapter_dirs["support"], big)
    config = json.loads((big / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps({**config, "r": 1024}))
    register_version(big, str(api_model_dir))
    monkeypatch.setattr(vllm_replicas, "check_available",  # as if on a CUDA machine with vLLM
                        lambda python=None: vllm_replicas.VllmInstall(python=sys.executable, version="x", device="cuda"))

    with pytest.raises(OikyoError, match="rank 1024"):
        deployments.deploy(versions["support"], name="on-vllm", engine="vllm", port=0)
    record = deployments.get("on-vllm")
    assert record.engine == "vllm" and deployments.status(record) == "stopped"


def test_the_interpreter_flags_and_cpu_cache_come_from_the_install_and_the_settings(monkeypatch):
    cpu = vllm_replicas.VllmInstall(python="/envs/vllm/bin/python", version="0.32.0", device="cpu")
    cmd = vllm_replicas.command("/models/base", ["base"], {}, port=1, install=cpu,
                              extra=["--dtype", "float32"])
    assert cmd[0] == "/envs/vllm/bin/python"
    assert cmd[cmd.index("--kv-cache-memory-bytes") + 1] == str(4 * 2**30)  # vLLM would take 92% of the memory
    assert cmd[-2:] == ["--dtype", "float32"]  # the user's flags come last
    for sized in (["--kv-cache-memory-bytes", "1000000"], ["--gpu-memory-utilization=0.2"]):
        cmd = vllm_replicas.command("/m", ["m"], {}, port=1, install=cpu, extra=sized)
        assert cmd.count("--kv-cache-memory-bytes") == sized.count("--kv-cache-memory-bytes")
    gpu = vllm_replicas.VllmInstall(python="/usr/bin/python3", version="0.32.0", device="cuda")
    assert "--kv-cache-memory-bytes" not in vllm_replicas.command("/m", ["m"], {}, port=1, install=gpu)

    monkeypatch.delenv(vllm_replicas.PYTHON_ENV, raising=False)
    assert vllm_replicas.interpreter() == sys.executable
    monkeypatch.setenv(vllm_replicas.PYTHON_ENV, "/envs/vllm/bin/python")
    assert vllm_replicas.interpreter() == "/envs/vllm/bin/python"
    assert vllm_replicas.interpreter("/other/python") == "/other/python"


def test_user_flags_may_not_take_over_what_oikyo_sets():
    assert vllm_replicas.extra_args(None) == [] and vllm_replicas.extra_args("") == []
    assert vllm_replicas.extra_args("--max-model-len 512 --served-model-name-suffix x") == [
        "--max-model-len", "512", "--served-model-name-suffix", "x"]
    for flag in vllm_replicas.RESERVED_FLAGS:
        with pytest.raises(OikyoError, match=f"may not set {flag}"):
            vllm_replicas.extra_args(f"--dtype float32 {flag}=x")
    with pytest.raises(OikyoError, match="No closing quotation"):
        vllm_replicas.extra_args('--chat-template "unclosed')
