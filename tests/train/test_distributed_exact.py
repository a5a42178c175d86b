"""train.nproc=2 (torchrun, gloo, DDP) against one process: the same loss curve, one whole adapter."""

from __future__ import annotations

import json

from disthelpers import largest_difference, train
from trainhelpers import chat_rows


def test_a_rank_takes_its_share_of_each_global_batch():
    from oikyo.train.distributed import Dist, share

    ranks = [Dist(rank, 2, rank, 2) for rank in (0, 1)]
    assert [share([7, 8, 9], d) for d in ranks] == [([7], True), ([8, 9], True)]
    assert [share([7], d) for d in ranks] == [([7], False), ([7], True)]  # rank 0: a zero-weighted stand-in


def test_the_backend_follows_the_device():
    from oikyo.train.distributed import backend_for

    assert backend_for("cpu") == "gloo" and backend_for("cuda") == "nccl"  # never a gloo group on CUDA tensors


def test_two_processes_give_the_one_process_loss_curve(tiny_dir, tmp_path):
    # 31 rows in batches of 3: shares of 1 and 2 examples, and each epoch's last batch holds a single
    # example, so one rank trains on nothing (a zero-weighted pass keeps DDP's collectives in step).
    rows = chat_rows(31)
    overrides = ["train.max_steps=30", "train.eval_every=15"]
    _, one, _ = train(tiny_dir, tmp_path / "one", 1, overrides, rows)
    result, two, logs = train(tiny_dir, tmp_path / "two", 2, overrides, rows)

    assert result.status == "succeeded" and result.steps == 30
    assert sorted(two) == list(range(1, 31))  # rank 0 reports every step once
    losses = [one[s]["loss"] for s in (1, 30)]
    assert losses[1] < losses[0] - 0.5  # the curve moves: the comparison below means something
    difference = largest_difference(one, two, range(1, 31))
    print(f"largest loss difference over 30 float32 steps, 1 vs 2 processes: {difference:.2e}")
    assert difference <= 1e-5
    assert largest_difference(one, two, (15, 30), "eval_loss") <= 1e-5
    assert [one[s]["tokens"] for s in (1, 30)] == [two[s]["tokens"] for s in (1, 30)]  # summed over the ranks

    # Rank 0 alone logs: one line per saved checkpoint, not one per rank.
    assert sum(line.startswith("Saved checkpoint step-000030") for line in logs) == 1
    assert any("processes=2" in line for line in logs)

    # The checkpoint: DCP state plus the adapter written once, whole, behind the COMPLETE marker.
    folder = result.final_checkpoint
    assert sorted(p.name for p in folder.iterdir()) == [
        "COMPLETE", "adapter_config.json", "adapter_model.safetensors", "dcp", "scheduler.json", "trainer_state.json"]
    assert (folder / "dcp" / ".metadata").is_file()
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(folder / "dcp")).read_metadata().state_dict_metadata
    weights = [key for key in keys if key.startswith("model.")]
    assert len(weights) == 2 * 7 * 2 and all(".lora_" in key for key in weights)  # trainable only, no frozen alias
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["format"] == "dcp" and state["world_size"] == 2 and state["samples"] > 0

    # The exported adapter holds every layer's LoRA matrices and equals the one-process adapter.
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "output" / "adapter_model.safetensors"))
    b = load_file(str(result.output_dir / "adapter_model.safetensors"))
    assert sorted(a) == sorted(b)
    layers = {key.split(".layers.")[1].split(".")[0] for key in b}
    assert layers == {"0", "1"}
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert not (result.output_dir / "dcp").exists()
