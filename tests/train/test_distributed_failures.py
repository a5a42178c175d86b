"""train.nproc=2: a dying rank fails the whole run without hanging; a cancel stops every rank; refusals."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from disthelpers import train
from trainhelpers import chat_rows

from oikyo.train import TrainingError, launch


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_dying_rank_fails_the_group_without_a_hang(tiny_dir, tmp_path, monkeypatch, how):
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DYING_RANK_HOW", how)
    monkeypatch.setenv("OIKYO_DIST_TIMEOUT_S", "60")
    monkeypatch.setattr(launch, "torchrun_command", lambda n, spec: [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "--max-restarts=0",
        "-m", "dist_dying_rank", str(spec)])
    start = time.monotonic()
    with pytest.raises(TrainingError) as caught:
        train(tiny_dir, tmp_path / "run", 2, ["train.max_steps=20"], chat_rows(32))
    assert time.monotonic() - start < 60  # torchrun stopped rank 0 too; nobody waited for the timeout
    message = str(caught.value)
    if how == "raise":
        assert "rank 1: RuntimeError: rank 1 lost its disk" in message
    else:
        assert "rank 1 exited with code 7" in message
    assert not (tmp_path / "run" / "output").exists()


def test_a_cancel_stops_every_rank_with_a_checkpoint(tiny_dir, tmp_path):
    result, metrics, logs = train(tiny_dir, tmp_path / "run", 2, ["train.max_steps=200", "train.eval_every=1000"],
                                  chat_rows(32), stop_after=3)
    assert result.status == "cancelled" and 3 <= result.steps < 200
    assert (result.final_checkpoint / "dcp" / ".metadata").is_file()
    assert (result.final_checkpoint / "COMPLETE").is_file()
    assert not (tmp_path / "run" / "output").exists()
    assert any(line.startswith(f"Cancel requested at step {result.steps}") for line in logs)


def test_qlora_is_refused_for_multi_process_runs():
    from oikyo.train.config import load_config

    with pytest.raises(Exception) as caught:
        load_config(None, ["train.nproc=2", "method.finetune=qlora"])
    text = str(caught.value)
    assert "method.finetune lora (DDP) and full (FSDP2) only" in text
    assert load_config(None, ["train.nproc=2"]).train.nproc == 2
    assert load_config(None, ["train.nproc=2", "method.finetune=full"]).method.finetune == "full"
