"""`oikyo train --nproc N`: a shortcut for --set train.nproc=N, checked against the method when queued
(the real recipe's config; nothing trains here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

import jobhelpers  # noqa: E402


def oikyo(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    env.pop("OIKYO_RECIPE", None)
    return subprocess.run([sys.executable, "-m", "oikyo.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_nproc_is_queued_in_the_config_and_refused_for_other_methods(tmp_path):
    from oikyo.jobs import queue

    dataset = jobhelpers.make_dataset(tmp_path)
    model = str(jobhelpers.make_model_dir(tmp_path / "model"))
    common = ["train", "--dataset", dataset.id, "--model", model, "--detach", "--no-start-worker"]

    refused = oikyo(*common, "--nproc", "2", "--set", "method.finetune=qlora")
    assert refused.returncode != 0
    assert "train.nproc: multi-process training supports method.finetune lora" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr

    queued = oikyo(*common, "--nproc", "2")
    assert queued.returncode == 0, queued.stderr
    run_id = queued.stdout.strip().splitlines()[-1]
    assert queue.get(run_id).config["train"]["nproc"] == 2
