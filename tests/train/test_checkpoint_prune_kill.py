"""Pruning old checkpoints with a kill in the middle (issue 22): a folder half deleted is never complete.

``prune`` removes a folder's COMPLETE marker before its files, so a process killed while deleting leaves
an incomplete folder (ignored, then cleaned up), not a "complete" one without its weights that the
best-checkpoint export could pick.
"""

from __future__ import annotations

import json

from oikyo.train import checkpoints as ckpt


def _folder(root, step: int, eval_loss: float):
    folder = root / ckpt.checkpoint_name(step)
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / ckpt.TRAINER_STATE).write_text(json.dumps({"step": step, "eval_loss": eval_loss}))
    (folder / ckpt.COMPLETE).write_text("complete\n")
    return folder


def test_a_prune_killed_while_deleting_leaves_no_complete_folder_without_weights(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]:
        _folder(root, step, loss)

    def killed_after_the_weights(path, ignore_errors=False):  # the process dies after one file is gone
        (path / "adapter_model.safetensors").unlink()

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_after_the_weights)
    ckpt.prune(root, keep_best=1)  # step 1 goes: neither the newest nor the best
    assert [p.name for p in ckpt.list_complete(root)] == ["step-000002", "step-000003"]
    assert ckpt.best_checkpoint(root)[0].name == "step-000002"
    monkeypatch.undo()
    assert [p.name for p in ckpt.clean_incomplete(root)] == ["step-000001"]
