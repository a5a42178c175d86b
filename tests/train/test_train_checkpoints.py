"""Checkpoint folders: atomic writes, exact files, incomplete folders ignored, best-k retention, exact state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from oikyo.train import checkpoints as ckpt


def _optimizer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(2, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def _weights(folder):
    (folder / "adapter_model.safetensors").write_bytes(b"weights")


def _save(root, step, eval_loss=None):
    _, optimizer, scheduler = _optimizer()
    return ckpt.save_checkpoint(root, step, write_weights=_weights, optimizer=optimizer, scheduler=scheduler,
                                state={"eval_loss": eval_loss, "epoch": 0, "batch_index": step})


def test_a_checkpoint_holds_exactly_the_expected_files(tmp_path):
    path = _save(tmp_path / "checkpoints", 50, eval_loss=1.5)
    assert path.name == "step-000050"
    assert sorted(p.name for p in path.iterdir()) == [
        "COMPLETE",
        "adapter_model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "scheduler.json",
        "trainer_state.json",
    ]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000050"]  # no temp folder left
    state = ckpt.read_state(path)
    assert state["step"] == 50 and state["eval_loss"] == 1.5 and set(state["rng"]) >= {"python", "numpy", "torch"}


def test_no_pickle_anywhere_in_a_checkpoint(tmp_path):
    path = _save(tmp_path, 1)
    for file in path.iterdir():
        assert not file.read_bytes().startswith(b"\x80"), f"{file.name} looks like a pickle"
        assert b"PK\x03\x04" not in file.read_bytes()[:4], f"{file.name} looks like a torch zip"


def test_a_folder_without_complete_is_never_chosen_and_is_cleaned_up(tmp_path):
    root = tmp_path / "checkpoints"
    good = _save(root, 10)
    newer = _save(root, 20)
    (newer / "COMPLETE").unlink()  # as if the process died before the marker
    (root / ".tmp-step-000030-999").mkdir()
    assert ckpt.latest_complete(root) == good
    assert ckpt.list_complete(root) == [good]
    removed = ckpt.clean_incomplete(root)
    assert sorted(p.name for p in removed) == [".tmp-step-000030-999", "step-000020"]
    assert sorted(p.name for p in root.iterdir()) == ["step-000010"]


def test_prune_keeps_the_best_k_by_eval_loss_plus_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for step, loss in [(1, 3.0), (2, 1.0), (3, None), (4, 2.0), (5, 5.0), (6, 4.0)]:
        _save(root, step, eval_loss=loss)
    removed = ckpt.prune(root, keep_best=2)
    assert sorted(p.name for p in removed) == ["step-000001", "step-000003", "step-000005"]
    assert [p.name for p in ckpt.list_complete(root)] == ["step-000002", "step-000004", "step-000006"]
    best, loss = ckpt.best_checkpoint(root)
    assert best.name == "step-000002" and loss == 1.0
    ckpt.prune(root, keep_best=0)
    assert [p.name for p in ckpt.list_complete(root)] == ["step-000006"]


def test_optimizer_and_scheduler_state_round_trip_exactly(tmp_path):
    model, optimizer, scheduler = _optimizer()
    path = ckpt.save_checkpoint(tmp_path, 3, write_weights=_weights, optimizer=optimizer, scheduler=scheduler, state={})
    meta = json.loads((path / "optimizer.json").read_text())
    assert meta["param_groups"][0]["lr"] == optimizer.param_groups[0]["lr"]

    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1.0 / (step + 1))
    ckpt.load_optimizer(fresh, path)
    ckpt.load_scheduler(fresh_scheduler, path)
    before, after = optimizer.state_dict(), fresh.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for index, state in before["state"].items():
        for name, value in state.items():
            assert torch.equal(value, after["state"][index][name]), (index, name)
    assert fresh_scheduler.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_rng_states_round_trip(tmp_path):
    state = json.loads(json.dumps(ckpt.rng_state()))  # survives JSON
    expected = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


def test_step_names_parse():
    assert ckpt.checkpoint_name(7) == "step-000007"
    assert ckpt.step_of(ckpt.checkpoint_name(1234567)) == 1234567
    with pytest.raises(ValueError):
        ckpt.step_of("latest")
