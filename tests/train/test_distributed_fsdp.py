"""Full fine-tuning with train.nproc=2 (torchrun, gloo, FSDP2) against one process: the same loss curve,
DCP checkpoints that resume in one process, and one whole Hugging Face model exported by rank 0."""

from __future__ import annotations

import json
import shutil

import pytest
from disthelpers import largest_difference, train
from trainhelpers import chat_rows

# Full fine-tuning, a checkpoint every 4 steps (each with an eval loss, all kept): step 8 is there to resume from.
FULL = ["method.finetune=full", "train.max_steps=20", "checkpoint.save_every=4", "train.eval_every=4",
        "checkpoint.keep_best=5"]
ROWS = 31


@pytest.fixture(scope="module")
def one_process(tiny_dir, tmp_path_factory):
    """The one-process full fine-tune, trained once for the module: (its run folder, {step: metrics}). Its
    curve is every comparison's reference, and its safetensors checkpoints are what FSDP2 resumes from
    (tests copy the folder before changing anything)."""
    run_dir = tmp_path_factory.mktemp("one-process") / "one"
    _, metrics, _ = train(tiny_dir, run_dir, 1, FULL, chat_rows(ROWS))
    return run_dir, metrics


def test_full_fine_tune_on_two_processes_matches_one_and_resumes_at_one(tiny_dir, tmp_path, one_process):
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader
    from transformers import AutoModelForCausalLM

    rows = chat_rows(ROWS)
    one_dir, one = one_process
    result, two, logs = train(tiny_dir, tmp_path / "two", 2, FULL, rows)

    assert result.status == "succeeded" and result.steps == 20 and sorted(two) == list(range(1, 21))
    assert one[20]["loss"] < one[1]["loss"] - 0.5  # the curve moves: the comparison below means something
    difference = largest_difference(one, two, range(1, 21))
    print(f"full fine-tune (FSDP2): largest loss difference over 20 float32 steps, 1 vs 2 processes: {difference:.2e}")
    assert difference <= 1e-5
    assert largest_difference(one, two, (4, 20), "eval_loss") <= 1e-5
    assert largest_difference(one, two, (1, 20), "grad_norm") <= 1e-4  # clipped over all shards, not one
    assert any("processes=2" in line for line in logs)

    # A checkpoint: sharded DCP state (every weight once, no tied alias) plus the whole model, by rank 0.
    folder = result.final_checkpoint
    assert {"COMPLETE", "dcp", "model.safetensors", "config.json", "scheduler.json", "trainer_state.json"} <= {
        p.name for p in folder.iterdir()}
    keys = FileSystemReader(str(folder / "dcp")).read_metadata().state_dict_metadata
    weights = {key for key in keys if key.startswith("model.")}
    reference = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert weights == {f"model.{name}" for name, _ in reference.named_parameters()}
    assert any(key.startswith("optimizer.state.") for key in keys)
    assert json.loads((folder / "trainer_state.json").read_text())["world_size"] == 2

    # The export loads with transformers and equals the one-process model: every tensor whole, not a shard.
    exported = AutoModelForCausalLM.from_pretrained(result.output_dir, dtype=torch.float32)
    single = AutoModelForCausalLM.from_pretrained(one_dir / "output", dtype=torch.float32)
    a, b = dict(single.named_parameters()), dict(exported.named_parameters())
    assert sorted(a) == sorted(b)
    assert all(a[k].shape == b[k].shape for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    start = load_file(str(tiny_dir / "model.safetensors"))
    assert max((start[k] - b[k]).abs().max().item() for k in start if k in b) > 1e-3  # it trained
    assert not (result.output_dir / "dcp").exists()

    # Saved at 2 processes, resumed at 1: the curve continues as the uninterrupted run's.
    run_dir = tmp_path / "resume-at-1"
    shutil.copytree(tmp_path / "two", run_dir)
    for checkpoint in (run_dir / "checkpoints").iterdir():
        if int(checkpoint.name.split("-")[1]) > 8:
            shutil.rmtree(checkpoint)
    shutil.rmtree(run_dir / "output")
    resumed_result, resumed, logs = train(tiny_dir, run_dir, 1, FULL, rows)
    assert any(line.startswith("Resumed from step-000008") and "saved by 2 processes" in line for line in logs)
    assert sorted(resumed) == list(range(9, 21)) and resumed_result.status == "succeeded"
    difference = largest_difference(one, resumed, range(9, 21))
    print(f"full fine-tune saved at 2, resumed at 1: largest loss difference {difference:.2e}")
    assert difference <= 1e-5


def test_a_one_process_full_checkpoint_resumes_sharded_at_two(tiny_dir, tmp_path, one_process):
    """A one-process full fine-tune's safetensors checkpoint (optimizer keyed by index) resumes under FSDP2."""
    run_dir = tmp_path / "one"
    shutil.copytree(one_process[0], run_dir)
    reference = one_process[1]
    # The module's one-process run, resumed from its step 12 at 2 processes: steps 13 to 20 under FSDP2.
    assert (run_dir / "checkpoints" / "step-000012" / "optimizer.safetensors").is_file()
    for checkpoint in (run_dir / "checkpoints").iterdir():
        if int(checkpoint.name.split("-")[1]) > 12:
            shutil.rmtree(checkpoint)
    shutil.rmtree(run_dir / "output")
    result, resumed, logs = train(tiny_dir, run_dir, 2, FULL, chat_rows(ROWS))
    assert any(line.startswith("Resumed from step-000012") for line in logs)
    assert sorted(resumed) == list(range(13, 21)) and result.status == "succeeded"
    difference = largest_difference(reference, resumed, range(13, 21))
    print(f"full fine-tune saved at 1, resumed at 2: largest loss difference {difference:.2e}")
    assert difference <= 1e-5
