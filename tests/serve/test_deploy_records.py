"""Deployment records and the `oikyo deploy` / `oikyo deployments` commands, without starting processes.

Bad input gets a readable message and exit code 2; records keep their settings; a record that
says running while its process is gone shows as ``gone``.
"""

from __future__ import annotations

import socket

import pytest
from serving_fixtures import *  # noqa: F401,F403
from typer.testing import CliRunner

from oikyo.cli.main import app
from oikyo.errors import OikyoError
from oikyo.serve.gateway import deployments
from oikyo.serve.gateway.served_models import resolve


def _invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_deploy_refuses_bad_input_with_a_clear_message(versions):
    mv = versions["support"]
    cases = {
        ("deploy", "mv-doesnotexist", "--detach"): "unknown model",
        ("deploy", mv, "--engine", "vllm", "--detach"): "vllm",
        ("deploy", mv, "--engine", "tgi", "--detach"): "--engine must be one of",
        ("deploy", mv, "--replicas", "lots", "--detach"): "--replicas must be",
        ("deploy", mv, "--split", "nonsense", "--detach"): "bad --split item",
        ("deploy", mv, "--split", f"{versions['sales']}=1", "--detach"): "not one of the --split variants",
        ("deploy", mv, "--name", "bad name!", "--detach"): "invalid deployment name",
        ("deploy", mv, "--target-latency", "3", "--detach"): "--target-latency needs --replicas auto",
        ("deploy", mv, "--weights", "float8", "--detach"): "--weights must be one of float32, float16, not 'float8'",
        # Refused before the engine is even looked for: vLLM and llama.cpp choose their own precision.
        ("deploy", mv, "--engine", "vllm", "--weights", "float16", "--detach"): '--vllm-args "--dtype float16"',
        ("deploy", mv, "--engine", "llamacpp", "--weights", "float16", "--detach"): "--gguf-quant f16",
        ("deploy", "--name", "never-made", "--detach"): "no deployment named",
        ("deployments", "show", "nope"): "no deployment named",
        ("deployments", "stop", "nope"): "no deployment named",
        ("deployments", "ab-report", "nope"): "no deployment named",
    }
    for args, message in cases.items():
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    assert deployments.list_deployments() == []


def test_a_taken_port_is_refused_before_anything_starts(versions):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OikyoError, match=f"port {port}"):
            deployments.deploy(versions["support"], name="clash", port=port)
    assert deployments.get("clash").state == "stopped"  # recorded, never started


def test_the_weights_option_reaches_the_record_and_the_replicas(versions):
    with socket.socket() as busy:  # a taken port: recorded, then refused before any process starts
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _invoke("deploy", versions["support"], "--name", "half", "--weights", "float16", "--port", str(port),
                         "--detach")
    assert result.exit_code == 2 and f"port {port}" in result.output, result.output
    assert deployments.get("half").settings["weights"] == "float16"
    args = deployments.plan("half").replica_args()
    assert args[args.index("--weights") + 1] == "float16"
    deployments._save("plain", None, variants=deployments.make_variants(versions["support"], None), host=None,
                      port=0, replicas=None, log_requests=None, engine=None, settings=None)
    args = deployments.plan("plain").replica_args()
    assert args[args.index("--weights") + 1] == "float32"  # the default, said explicitly


def test_float16_weights_are_refused_when_a_recorded_deployment_changes_engine(versions):
    """The check also covers the recorded half: a float16 record moved to vLLM, float16 asked of a vLLM record."""
    variants = deployments.make_variants(versions["support"], None)
    deployments._save("half", None, variants=variants, host=None, port=0, replicas=None, log_requests=None,
                      engine=None, settings={"weights": "float16"})
    deployments._save("on-vllm", None, variants=variants, host=None, port=0, replicas=None, log_requests=None,
                      engine="vllm", settings=None)
    with pytest.raises(OikyoError, match="Pass --weights float32 with --engine vllm"):
        deployments.deploy(name="half", engine="vllm")
    with pytest.raises(OikyoError, match=r"--gguf-quant f16"):
        deployments.deploy(name="half", engine="llamacpp")
    with pytest.raises(OikyoError, match=r'--vllm-args "--dtype float16"'):
        deployments.deploy(name="on-vllm", settings={"weights": "float16"})
    assert (deployments.get("half").engine, deployments.get("half").settings["weights"]) == ("native", "float16")
    assert deployments.get("on-vllm").settings["weights"] == "float32"


def test_the_deployments_weights_are_the_engines():
    from oikyo.serve.engine.core import WEIGHTS

    assert deployments.WEIGHTS == WEIGHTS and deployments.DEFAULT_SETTINGS["weights"] == WEIGHTS[0]


def test_replicas_option():
    assert deployments.parse_replicas("3") == (3, 3, False)
    assert deployments.parse_replicas("auto") == (1, deployments.DEFAULT_AUTO_MAX, True)
    assert deployments.parse_replicas("auto:2-5") == (2, 5, True)
    for bad in ("0", "auto:3-1", "many", "-1"):
        with pytest.raises(OikyoError):
            deployments.parse_replicas(bad)


def test_resolve_models_and_plan_pools(versions, api_model_dir):
    a, b = versions["support"], versions["sales"]
    spec = resolve(a[3:7])  # a unique prefix without "mv-"
    assert spec.id == a and spec.kind == "adapter" and spec.load_dir == str(api_model_dir)
    base = resolve(str(api_model_dir))
    assert base.kind == "base" and base.adapter_dir is None
    deployments._save("exp", None, variants=deployments.make_variants(a, f"{a}=90,{b}=10"), host=None, port=0,
                      replicas="auto:1-3", log_requests=True, engine="native",
                      settings={"max_batch_size": 4, "autoscale": {"max_p95_latency_s": 9.0}})
    plan = deployments.plan("exp")
    assert [v.weight for v in plan.variants] == [90, 10]
    assert list(plan.pool_specs) == [str(api_model_dir)]  # both adapters share one base: one pool
    assert (plan.replicas_min, plan.replicas_max) == (1, 3)
    assert plan.settings["autoscale"]["max_replicas"] == 3 and plan.settings["autoscale"]["max_p95_latency_s"] == 9.0
    record = deployments.get("exp")  # restarting with new knobs keeps the rest of the policy
    deployments._save("exp", record, variants=None, host=None, port=None, replicas=None, log_requests=None,
                      engine=None, settings={"autoscale": {"scale_up_cooldown_s": 5.0}})
    policy = deployments.get("exp").settings["autoscale"]
    assert policy["scale_up_cooldown_s"] == 5.0 and policy["max_p95_latency_s"] == 9.0 and policy["max_replicas"] == 3
    assert "--max-batch-size" in plan.replica_args() and "4" in plan.replica_args()


def test_a_running_record_whose_process_is_gone_shows_as_gone(versions):
    deployments._save("ghost", None, variants=deployments.make_variants(versions["support"], None), host=None,
                      port=0, replicas=None, log_requests=None, engine=None, settings=None)
    deployments.mark("ghost", "starting", pid=2**22 + 12345)  # no such process
    deployments.mark("ghost", "running")
    assert deployments.status(deployments.get("ghost")) == "gone"
    listed = _invoke("deployments", "list")
    assert listed.exit_code == 0 and "gone" in listed.output
    shown = _invoke("deployments", "show", "ghost")
    assert "deployments start ghost" in " ".join(shown.output.split())
    assert deployments.stop("ghost")["status"] == "stopped"


def test_ab_report_and_export_commands_on_a_recorded_deployment(versions, tmp_path):
    from oikyo.serve.gateway import request_log

    deployments._save("exp", None, variants=deployments.make_variants(None, f"{versions['support']}=1,"
                                                                            f"{versions['sales']}=1"),
                      host=None, port=0, replicas=None, log_requests=True, engine=None, settings=None)
    recorder = request_log.RequestRecorder()
    recorder.add(request_log.RequestRecord(id="r1", deployment="exp", variant=versions["support"],
                                           model=versions["support"], endpoint="chat", status=200, latency_s=0.2,
                                           request={"messages": [{"role": "user", "content": "hi"}]}, response="hello"))
    recorder.close()
    report = _invoke("deployments", "ab-report", "exp")
    assert report.exit_code == 0, report.output
    assert versions["support"] in report.output and "verdict" in report.output
    path = tmp_path / "out.jsonl"
    exported = _invoke("deployments", "export", "exp", str(path))
    assert exported.exit_code == 0 and path.read_text().count("\n") == 1


def test_a_detached_start_returns_only_once_the_record_says_running(monkeypatch):
    """The router's /health says ready a supervisor tick before it records "running": the waiter waits for both."""
    from types import SimpleNamespace

    states = iter(["starting", "starting", "starting", "running"])
    seen = []

    def record(name):
        seen.append(next(states, "running"))
        return SimpleNamespace(host="127.0.0.1", port=1, state=seen[-1])

    monkeypatch.setattr(deployments, "get", record)
    monkeypatch.setattr(deployments, "_health", lambda base: {"status": "ready"})
    monkeypatch.setattr(deployments.time, "sleep", lambda s: None)
    deployments._wait_ready("d", SimpleNamespace(poll=lambda: None), 30, None)
    assert seen[-1] == "running" and len(seen) == 4
