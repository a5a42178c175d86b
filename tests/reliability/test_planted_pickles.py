"""No pickle is ever loaded (issue 22): a malicious pickle planted in a model folder, an adapter folder
or a checkpoint never runs, whatever loads the folder (the model loader, the catalog, the serving engine
and its adapters, training from an adapter, merging, resuming from a checkpoint, DCP included); where
the weights are only pickled the user gets a clear message.

The planted files are real ``torch.save`` files whose unpickling would create a marker file; a control
test shows that a plain ``torch.load(weights_only=False)`` of them does create it, so the sweep can fail.
"""

from __future__ import annotations

import builtins
import shutil
from pathlib import Path

import pytest

PLANTED = ("pytorch_model.bin", "adapter_model.bin", "optimizer.pt", "rng_state.pth", "training_args.bin",
           "scheduler.pt")


class _Payload:
    """Unpickling this opens (creates) ``marker`` for writing: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "outside" / "PICKLE-RAN"
    path.parent.mkdir()
    yield path
    assert not path.exists(), "a planted pickle was executed"


def plant(folder: Path, marker: Path, names=PLANTED) -> list[Path]:
    """``names`` in ``folder``, each a torch.save file holding the payload."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    planted = []
    for name in names:
        torch.save({"weight": _Payload(marker)}, folder / name)
        planted.append(folder / name)
    return planted


def test_the_planted_files_do_run_code_when_unpickled(tmp_path):
    """The control: a plain, unsafe load of a planted file creates the marker."""
    import torch

    marker = tmp_path / "ran"
    (path,) = plant(tmp_path / "m", marker, ["pytorch_model.bin"])
    torch.load(path, weights_only=False)
    assert marker.exists()


def _pickle_only_model(tiny_model_dir: Path, folder: Path, marker: Path) -> Path:
    """A copy of the tiny model whose weights are only the planted pickles."""
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    plant(folder, marker)
    return folder


def test_a_model_folder_with_only_pickled_weights_is_refused_everywhere(tiny_model_dir, tmp_path, marker, workspace):
    from oikyo.errors import OikyoError
    from oikyo.models import catalog
    from oikyo.models.loading import PickledWeights, load_model
    from oikyo.serve.engine.core import GenerationEngine

    folder = _pickle_only_model(tiny_model_dir, tmp_path / "pickled-model", marker)
    with pytest.raises(PickledWeights, match="only in pickle form.*pytorch_model.bin.*safetensors"):
        load_model(folder)
    with pytest.raises(PickledWeights):
        GenerationEngine(folder, num_threads=1)  # what a deployment's replica or an evaluation loads
    with pytest.raises(OikyoError, match="pickled weights"):
        catalog.add_model(str(folder), name="evil")


def test_planted_pickles_beside_safetensors_weights_are_ignored_when_serving(tiny_model_dir, tmp_path, marker):
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    plant(folder, marker)
    engine = GenerationEngine(folder, num_threads=1)
    prompt = engine.tokenizer("Hello")["input_ids"]
    (result,) = engine.generate([GenerationRequest(prompt_ids=prompt, max_new_tokens=3, temperature=0.0)])
    assert result.completion_tokens >= 1


def _adapter(tiny_model_dir: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    from oikyo.models.loading import load_model

    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    return folder


def test_an_adapter_with_only_pickled_weights_is_refused_everywhere(tiny_model_dir, tmp_path, marker):
    from oikyo.models.loading import PickledWeights, load_model
    from oikyo.serve.engine.lora import AdapterError, read_adapter_config
    from oikyo.train.runner import _load_adapter, merge_adapter

    folder = _adapter(tiny_model_dir, tmp_path / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    plant(folder, marker)
    with pytest.raises(AdapterError, match="only in pickle form"):
        read_adapter_config(folder)  # the serving engine and evaluations load adapters through this
    with pytest.raises(PickledWeights):
        _load_adapter(load_model(tiny_model_dir), folder, {"lora_dropout": 0.0})  # model.start=continue
    with pytest.raises(PickledWeights):
        merge_adapter(tiny_model_dir, folder, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_an_adapter_with_planted_pickles_beside_its_safetensors_serves(tiny_model_dir, tmp_path, marker):
    from oikyo.serve.engine.core import GenerationEngine
    from oikyo.serve.engine.requests import GenerationRequest

    folder = _adapter(tiny_model_dir, tmp_path / "adapter")
    plant(folder, marker)
    engine = GenerationEngine(tiny_model_dir, num_threads=1)
    engine.add_adapter("a", folder)
    prompt = engine.tokenizer("Hello")["input_ids"]
    (result,) = engine.generate([GenerationRequest(prompt_ids=prompt, max_new_tokens=2, temperature=0.0, adapter="a")])
    assert result.completion_tokens >= 1


def _train(tiny_model_dir: Path, run_dir: Path, steps: int):
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i} it is."}]}
            for i in range(8)]
    logs = []
    config = load_config(None, ["train.num_threads=1", "data.max_eval_rows=4", f"train.max_steps={steps}",
                                "checkpoint.save_every=1", "train.batch_size=2"])
    result = run_training(config, run_dir=run_dir, model_dir=tiny_model_dir, train_rows=lambda: rows,
                          eval_rows=lambda: rows[:2], on_metrics=lambda step, m: None, should_stop=lambda: False,
                          log=logs.append)
    return result, logs


def test_resuming_from_a_checkpoint_with_planted_pickles_never_runs_them(tiny_model_dir, tmp_path, marker):
    run_dir = tmp_path / "run"
    _train(tiny_model_dir, run_dir, steps=1)
    (checkpoint,) = sorted((run_dir / "checkpoints").glob("step-*"))
    planted = plant(checkpoint, marker)
    shutil.rmtree(run_dir / "output", ignore_errors=True)
    result, logs = _train(tiny_model_dir, run_dir, steps=2)
    assert any(line.startswith(f"Resumed from {checkpoint.name}") for line in logs), logs
    assert result.status == "succeeded"
    assert all(p.exists() for p in planted)  # left alone, never read
    # A DCP metadata file planted in the newest checkpoint: the resume refuses it, saying why.
    from oikyo.train.dcp_reading import UnsafeCheckpoint

    newest = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    (newest / "dcp").mkdir()
    torch_save_payload(newest / "dcp" / ".metadata", marker)
    shutil.rmtree(run_dir / "output", ignore_errors=True)
    with pytest.raises(UnsafeCheckpoint, match="refusing"):
        _train(tiny_model_dir, run_dir, steps=3)


def torch_save_payload(path: Path, marker: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps(_Payload(marker)))


def _dcp_checkpoint(folder: Path):
    """A DCP checkpoint of a small module and its AdamW state, as a multi-process run writes one."""
    import torch
    import torch.distributed.checkpoint as dcp

    from oikyo.train import distributed

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    dcp.save(distributed._state(model, optimizer), checkpoint_id=str(folder / distributed.DCP_DIR), no_dist=True)
    return model, optimizer


def _fresh():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    return model, torch.optim.AdamW(model.parameters(), lr=1.0)


def test_dcp_checkpoints_load_without_unpickling_code(tmp_path, marker):
    import pickle

    import torch
    import torch.distributed.checkpoint as dcp

    from oikyo.train import distributed
    from oikyo.train.dcp_reading import UnsafeCheckpoint, read_metadata_file

    folder = tmp_path / "step-000001"
    saved, _ = _dcp_checkpoint(folder)
    model, optimizer = _fresh()
    distributed.load_checkpoint(folder, model, optimizer)  # the safe reader reads a real checkpoint fully
    assert torch.equal(model[0].weight, saved[0].weight) and optimizer.param_groups[0]["lr"] == 3e-3

    # A non-tensor value (the learning rate) replaced by a payload appended to the data file.
    metadata_path = folder / distributed.DCP_DIR / ".metadata"
    with open(metadata_path, "rb") as stream:
        metadata = read_metadata_file(stream)
    index = next(i for i in metadata.storage_data if i.fqn == "optimizer.param_groups.0.lr")
    info = metadata.storage_data[index]
    data_file = folder / distributed.DCP_DIR / info.relative_path
    payload = tmp_path / "payload.pt"
    torch.save(_Payload(marker), payload)
    info.offset, info.length = data_file.stat().st_size, payload.stat().st_size
    with open(data_file, "ab") as stream:
        stream.write(payload.read_bytes())
    metadata_path.write_bytes(pickle.dumps(metadata))
    with pytest.raises(BaseException, match="not plain data|Unsupported global"):
        distributed.load_checkpoint(folder, *_fresh())
    assert not marker.exists()
    # The control: DCP's own planner would have run it.
    control = tmp_path / "control-ran"
    torch.save(_Payload(control), payload)
    data_file.write_bytes(data_file.read_bytes()[:info.offset] + payload.read_bytes())
    info.length = payload.stat().st_size
    metadata_path.write_bytes(pickle.dumps(metadata))
    model, optimizer = _fresh()
    state = distributed._state(model, optimizer)
    try:
        dcp.load(state, checkpoint_id=str(folder / distributed.DCP_DIR), no_dist=True)
    except BaseException:  # noqa: BLE001 - the payload is no float; the load may fail after running it
        pass
    assert control.exists()

    # The metadata itself replaced by a payload: refused with a clear message before anything runs.
    metadata_path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(UnsafeCheckpoint, match="refers to io.open.*refusing"):
        distributed.load_checkpoint(folder, *_fresh())
