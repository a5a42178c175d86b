"""`oikyo eval` from the command line: the job is followed to its end, gates set the exit code (3 when a
condition fails, 2 when the gate does not parse), the overlap guard refuses (2) unless --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate"))

from evalhelpers import make_json_dataset, register_adapter  # noqa: E402  (tests/evaluate/evalhelpers.py)
from evalhelpers import tiny_adapter_dir  # noqa: E402,F401  (the session fixture)

from oikyo.cli.main import app  # noqa: E402
from oikyo.evaluate.gate import EXIT_GATE_FAILED  # noqa: E402

FAST = ["--no-probe", "--max-new-tokens", "3", "--few-shot-k", "1", "--no-start-worker"]


@pytest.fixture
def model_version(tiny_adapter_dir, tiny_model_dir, tmp_path):  # noqa: F811
    dataset = make_json_dataset(tmp_path, "items", 30)
    return register_adapter(tiny_adapter_dir, tiny_model_dir, dataset), dataset


@pytest.fixture
def worker():
    """A worker thread in this process serving the queue while the CLI follows its job."""
    from oikyo.jobs.worker import Worker

    serving = Worker(lease_s=30, heartbeat_s=0.5, poll_s=0.05)
    thread = threading.Thread(target=serving.run, daemon=True)
    thread.start()
    yield serving
    serving.stop()
    thread.join(timeout=60)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_eval_follows_the_job_and_prints_model_base_and_few_shot(model_version, worker):
    mv, dataset = model_version
    result = invoke("eval", mv.id, *FAST)
    assert result.exit_code == 0, result.output
    assert "json_field_accuracy" in result.output and "1-shot" in result.output and mv.id in result.output
    shown = json.loads(invoke("evals", "list", "--json").output)
    assert {e["role"] for e in shown} == {"model", "base", "few_shot"}
    assert all(e["dataset_version_id"] == dataset.id and e["split"] == "test" for e in shown)


def test_a_failing_gate_exits_3_and_names_the_condition(model_version, worker):
    mv, _ = model_version
    result = invoke("eval", mv.id, *FAST, "--no-baselines", "--gate", "json_valid>=0.99,loss<1000")
    assert result.exit_code == EXIT_GATE_FAILED == 3, result.output
    assert "gate failed" in result.output and "json_valid>=0.99" in result.output
    assert "loss<1000: " in result.output and "pass" in result.output


def test_a_passing_gate_exits_0(model_version, worker):
    mv, _ = model_version
    result = invoke("eval", mv.id, *FAST, "--gate", "loss>0,delta.loss>-100,base.exact_match<=1")
    assert result.exit_code == 0, result.output


def test_a_gate_on_an_unknown_value_exits_2(model_version, worker):
    mv, _ = model_version
    result = invoke("eval", mv.id, *FAST, "--no-baselines", "--gate", "acuracy>=0.5")
    assert result.exit_code == 2 and "available:" in result.output


def test_a_gate_that_does_not_parse_exits_2_before_anything_runs(model_version):
    mv, _ = model_version
    result = invoke("eval", mv.id, "--gate", "accuracy>=high")
    assert result.exit_code == 2 and "cannot parse the gate" in result.output
    assert invoke("runs", "list", "--json").output.strip() == "[]"  # nothing was queued


def test_main_exits_2_on_a_bad_gate_in_a_real_process(model_version, workspace):
    mv, _ = model_version
    env = {**os.environ, "OIKYO_HOME": str(workspace)}
    done = subprocess.run([sys.executable, "-m", "oikyo.cli.main", "eval", mv.id, "--gate", "x=>1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "cannot parse the gate" in done.stderr


def test_overlap_is_refused_and_force_marks_the_result(model_version, worker):
    mv, dataset = model_version
    refused = invoke("eval", mv.id, "--dataset", f"{dataset.id}:train", *FAST)
    assert refused.exit_code == 2 and "refusing to evaluate" in refused.output and "--force" in refused.output
    forced = invoke("eval", mv.id, "--dataset", f"{dataset.id}:train", "--force", "--no-baselines", *FAST)
    assert forced.exit_code == 0, forced.output
    assert "forced_overlap=true" in forced.output
    [record] = json.loads(invoke("evals", "list", "--json").output)
    assert record["forced_overlap"] is True and record["split"] == "train"


def test_detach_prints_the_job_id_and_unknown_models_exit_2(model_version):
    mv, _ = model_version
    result = invoke("eval", mv.id, *FAST, "--detach")
    assert result.exit_code == 0 and result.output.strip().splitlines()[-1].startswith("run-")
    assert invoke("eval", "no-such-model", "--dataset", "items").exit_code == 2
    both = invoke("eval", mv.id, "--detach", "--gate", "loss<1")
    assert both.exit_code == 2 and "--detach" in both.output
