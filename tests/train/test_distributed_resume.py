"""DCP checkpoints of a 2-process run resume at another world size (1) and at the same one (2)."""

from __future__ import annotations

import shutil

import pytest
from disthelpers import largest_difference, train
from trainhelpers import chat_rows

# Checkpoints every 4 steps, each with an eval loss, all kept: step 4 is there to resume from.
STEPS = ["train.max_steps=12", "checkpoint.save_every=4", "train.eval_every=4", "checkpoint.keep_best=3"]
ROWS = 32


@pytest.fixture(scope="module")
def one_process(tiny_dir, tmp_path_factory):
    """The uninterrupted one-process run, trained once for the module: (its run folder, {step: metrics}).
    Its curve is every resume's reference, and its own checkpoints are the single-process ones a 2-process
    run resumes from (tests copy the folder before changing anything)."""
    run_dir = tmp_path_factory.mktemp("one-process") / "one"
    _, metrics, _ = train(tiny_dir, run_dir, 1, STEPS, chat_rows(ROWS))
    return run_dir, metrics


def rewind_to(run_dir, step: int) -> None:
    """Leave only the checkpoints up to ``step`` (as if the run had died right after saving it)."""
    for folder in (run_dir / "checkpoints").iterdir():
        if int(folder.name.split("-")[1]) > step:
            shutil.rmtree(folder)
    shutil.rmtree(run_dir / "output")


def test_saved_at_two_processes_resumes_at_one_and_at_two(tiny_dir, tmp_path, one_process):
    rows = chat_rows(ROWS)
    _, reference = one_process  # uninterrupted, one process
    saved_run = tmp_path / "two"
    _, two, _ = train(tiny_dir, saved_run, 2, STEPS, rows)
    assert sorted(p.name for p in (saved_run / "checkpoints").iterdir()) == [
        "step-000004", "step-000008", "step-000012"]
    assert (saved_run / "checkpoints" / "step-000004" / "dcp" / ".metadata").is_file()
    rewind_to(saved_run, 4)

    for nproc in (1, 2):
        run_dir = tmp_path / f"resume-at-{nproc}"
        shutil.copytree(saved_run, run_dir)
        result, resumed, logs = train(tiny_dir, run_dir, nproc, STEPS, rows)
        assert any(line.startswith("Resumed from step-000004") and "saved by 2 processes" in line for line in logs)
        assert not any("config changed" in line for line in logs)  # train.nproc is not part of the config hash
        assert sorted(resumed) == list(range(5, 13)) and result.status == "succeeded"
        difference = largest_difference(reference, resumed, range(5, 13))
        print(f"resumed at {nproc} process(es): largest loss difference to the uninterrupted run {difference:.2e}")
        assert difference <= 1e-5
        assert largest_difference(reference, resumed, (8, 12), "eval_loss") <= 1e-5
        assert resumed[12]["tokens"] == reference[12]["tokens"]


def test_a_one_process_checkpoint_resumes_at_two(tiny_dir, tmp_path, one_process):
    """Single-process runs keep the safetensors checkpoint; a 2-process run resumes from it too."""
    rows = chat_rows(ROWS)
    run_dir = tmp_path / "one"
    shutil.copytree(one_process[0], run_dir)
    reference = one_process[1]
    assert (run_dir / "checkpoints" / "step-000004" / "optimizer.safetensors").is_file()
    rewind_to(run_dir, 4)
    _, resumed, logs = train(tiny_dir, run_dir, 2, STEPS, rows)
    assert any(line.startswith("Resumed from step-000004") for line in logs)
    assert largest_difference(reference, resumed, range(5, 13)) <= 1e-5
