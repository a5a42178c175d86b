"""One training process among N (train.nproc > 1): the process group, DDP or FSDP2, DCP checkpoints.

The worker starts the processes with torchrun (:mod:`oikyo.train.launch`); each one calls
:func:`init` before :func:`oikyo.train.runner.run_training` and :func:`shutdown` after it. Inside,
:class:`oikyo.train.runner.Session` asks :func:`current` whether it is one of several ranks and then:

- LoRA: wraps the recipe's loss in :class:`torch.nn.parallel.DistributedDataParallel` (:func:`wrap`),
  so gradients are averaged by DDP's bucketed all-reduce, not by code of ours;
- full fine-tuning: shards the model with FSDP2 (:func:`shard`: ``fully_shard`` on each decoder
  layer, then the root), so each rank holds 1/N of the weights, gradients and AdamW state; the
  layers' weights are all-gathered around their forward and backward, gradients reduce-scattered
  (averaged); the full weights are gathered onto rank 0 only to be written (:func:`gather_full`);
- takes its share of each global batch (:func:`share`): ``train.batch_size`` stays the global
  batch, and the data position stays one global counter (the plan's batch index), so the same
  checkpoint resumes at any world size;
- lets a loss term that one process computes over its whole batch (KTO's reference point) take the
  mean over the global batch (:func:`global_mean`), so the methods give the one-process result;
- saves checkpoints with torch.distributed.checkpoint (:func:`save_checkpoint`,
  :func:`load_checkpoint`): the trainable parameters and the optimizer state, keyed by parameter
  name (not by rank or position), so a checkpoint written by 2 processes loads into 1 or 4.

Backends: gloo on CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``); the device decides, so a
gloo group never carries CUDA tensors. The NCCL path is correct by construction but has not run on
a GPU yet. Every collective has the group's timeout (``OIKYO_DIST_TIMEOUT_S``, default 600 s): a rank
that dies makes torchrun stop the others, and one that hangs makes the rest fail instead of waiting
forever. :func:`shutdown` passes a barrier before ``destroy_process_group`` so no rank tears the
group down while another still talks to it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from oikyo.train import checkpoints as ckpt

DCP_DIR = "dcp"  # inside a checkpoint folder: the torch.distributed.checkpoint files
TIMEOUT_ENV = "OIKYO_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class Dist:
    """This process's place in the group."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def current() -> Dist | None:
    """The group this process trains in, or None for a single-process run."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()) or td.get_world_size() == 1:
        return None
    return Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", td.get_rank())),
                int(os.environ.get("LOCAL_WORLD_SIZE", td.get_world_size())))


def backend_for(device: str) -> str:
    """gloo for CPU tensors, NCCL for CUDA ones."""
    return "nccl" if device == "cuda" else "gloo"


def init(device: str) -> None:
    """Join the group torchrun set up (env://) with a timeout on every collective."""
    import torch
    import torch.distributed as td

    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    backend = backend_for(device)
    if backend == "nccl":  # untested so far: no GPU was lent to the sessions that wrote this
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)  # before the model is built: "cuda" then means this rank's GPU
        td.init_process_group(backend, timeout=timeout, device_id=torch.device("cuda", local))
    else:
        td.init_process_group(backend, timeout=timeout)


def shutdown() -> None:
    """Barrier, then destroy the group (a rank that leaves early would break the others' last collective)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        try:
            td.barrier()
        finally:
            td.destroy_process_group()


def barrier() -> None:
    import torch.distributed as td

    td.barrier()


def any_true(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on one (a cancel request seen by rank 0 stops all)."""
    import torch
    import torch.distributed as td

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    td.all_reduce(value, op=td.ReduceOp.MAX)
    return bool(value.item())


def sum_all(values: list[float], device) -> list[float]:
    """Element-wise sums over the ranks (float64, so token counts stay exact)."""
    import torch
    import torch.distributed as td

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor.tolist()


def share(items: list, dist: Dist) -> tuple[list, bool]:
    """This rank's contiguous slice of a global micro-batch, and whether it holds real items.

    A batch with fewer items than ranks leaves some ranks empty; they run the first item with a zero
    loss weight instead, because DDP needs every rank in every backward pass. The session marks such a
    stand-in batch with the key :data:`STAND_IN`, so a loss that reduces over the global batch
    (:func:`global_mean`) leaves it out.
    """
    n = len(items)
    start, end = n * dist.rank // dist.world, n * (dist.rank + 1) // dist.world
    return (items[start:end], True) if end > start else (items[:1], False)


STAND_IN = "stand_in"  # batch key: this rank's share of the micro-batch is a zero-weighted stand-in (see share)


def global_mean(values, real: bool = True):
    """The mean of ``values`` (a 1-d tensor: this rank's share) over the whole global micro-batch. Collective.

    For a loss term that one process computes over its whole batch (KTO's reference point): the ranks
    all-reduce (sum, count) in float64 and divide, so the result is the one-process mean up to rounding.
    A stand-in share (``real`` False) counts for nothing. No gradient flows through the result.
    """
    import torch
    import torch.distributed as td

    values = values.detach()
    totals = torch.stack([values.sum().double(), torch.tensor(float(values.numel()), dtype=torch.float64,
                                                              device=values.device)])
    if not real:
        totals.zero_()
    td.all_reduce(totals, op=td.ReduceOp.SUM)
    return (totals[0] / totals[1].clamp(min=1)).to(values.dtype)


class _Loss:
    """Factory for the module DDP wraps: the model, whose forward is the recipe's loss on a batch."""

    @staticmethod
    def module(model, loss_fn):
        import torch

        class LossModule(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model  # registered, so DDP sees (and syncs) the model's parameters

            def forward(self, batch):  # noqa: D401 - (summed loss, extra metric sums)
                return loss_fn(batch)

        return LossModule()


def shard(model, dist: Dist, device):
    """FSDP2: ``fully_shard`` each decoder layer (transformers' ``_no_split_modules``), then a root around
    ``model``; returns the root, a module whose ``root(fn, *args)`` runs ``fn(*args)`` inside FSDP's forward.

    One unit per layer means only one layer's full weights exist at a time during forward/backward.
    The root unit holds the rest (embedding, tied lm_head, final norm). It wraps a call rather than
    ``model``'s own forward because the loss runs the model's trunk and output head separately
    (:func:`oikyo.train.runner.target_logprobs`), and FSDP gathers a unit's weights in its module's
    forward hook: the training loss and the evaluation both go through ``root``. Call it before the
    optimizer is built: the parameters become DTensors (each rank's shard), and AdamW must see those.
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # registered: its parameters outside the layers belong to the root unit

        def forward(self, fn, *args):  # noqa: D401 - whatever fn returns
            return fn(*args)

    mesh = init_device_mesh(device.type, (dist.world,))
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise RuntimeError(f"FSDP2: found no decoder layers ({sorted(names)}) in {type(model).__name__}")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    root = Root()
    fully_shard(root, mesh=mesh)
    return root


def gradient_sync(model, enabled: bool) -> None:
    """FSDP2's no_sync: with ``enabled`` False, backward accumulates unsharded gradients, no reduce-scatter."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_requires_gradient_sync(enabled, recurse=False)


def gather_full(model) -> dict:
    """The full (unsharded) model weights on CPU, on rank 0 (an empty dict on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def wrap(model, loss_fn, dist: Dist, device):
    """DDP around ``loss_fn(batch)`` (the recipe's loss, which runs ``model``): call it with a batch.

    DDP broadcasts rank 0's trainable parameters at construction (identical here anyway: same seed)
    and all-reduces (averages) the gradients in backward; ``no_sync()`` skips that for all but the
    last micro-batch of an optimizer step.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(_Loss.module(model, loss_fn), device_ids=ids, broadcast_buffers=False)


# ----------------------------------------------------------------------------- checkpoints


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Trainable parameters only (the frozen base is the base model's files); the optimizer state is
    # keyed by parameter name, which is what lets a checkpoint load at another world size.
    return StateDictOptions(ignore_frozen_params=True, strict=False)


def _state(model, optimizer) -> dict:
    """{"model": trainable parameters by name, "optimizer": AdamW state by parameter name}."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    # ignore_frozen_params misses aliases of frozen tied weights (lm_head.weight = the embedding):
    # keep exactly the trainable parameters.
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    return {"model": {k: v for k, v in model_state.items() if k in trainable}, "optimizer": optim_state}


def is_dcp(folder: Path) -> bool:
    """Whether a checkpoint folder holds DCP state (written by a multi-process run)."""
    return (Path(folder) / DCP_DIR / ".metadata").is_file()


def save_checkpoint(root: Path, step: int, *, dist: Dist | None, model, optimizer, write_weights, scheduler,
                    state: dict) -> Path:
    """Write checkpoint ``step`` with DCP, behind the same atomic COMPLETE marker as a single-process one.

    Every rank writes its part of the DCP files into one temporary folder; rank 0 then writes the
    whole weights (``write_weights``: safetensors of the adapter, which DDP replicates on each rank,
    or of the full model gathered from the FSDP2 shards beforehand), the scheduler and trainer state
    as JSON, fsyncs, renames and marks the folder complete.
    Collective: every rank calls it.
    """
    import torch.distributed.checkpoint as dcp

    rank = dist.rank if dist else 0
    root = Path(root)
    tmp = root / f".tmp-{ckpt.checkpoint_name(step)}-dcp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if dist:
        barrier()
    dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / DCP_DIR), no_dist=dist is None)
    final = root / ckpt.checkpoint_name(step)
    if rank == 0:
        try:
            write_weights(tmp)
            ckpt.write_json(tmp / ckpt.SCHEDULER_JSON, ckpt.json_safe(scheduler.state_dict()))
            ckpt.write_json(tmp / ckpt.TRAINER_STATE, {**state, "step": step, "rng": ckpt.rng_state(),
                                                       "format": "dcp", "world_size": dist.world if dist else 1})
            final = ckpt.commit(tmp, root, step)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if dist:
        barrier()  # no rank goes on (or saves again) before the folder is complete
    return final


def load_checkpoint(folder: Path, model, optimizer) -> None:
    """Load the DCP state of ``folder`` into ``model``'s trainable parameters and ``optimizer``.

    Works in any process count, also without a process group (a 1-process resume). No pickled code
    runs: the metadata and the non-tensor values are read by :mod:`oikyo.train.dcp_reading`
    (DCP's own reader would unpickle them freely); a trainable parameter missing from the checkpoint
    is an error.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from oikyo.train.dcp_reading import SafePlanner, SafeReader, check_metadata

    state = _state(model, optimizer)
    single = current() is None
    with warnings.catch_warnings():
        if single:  # DCP warns that it assumes one process: that is the intent here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        path = str(Path(folder) / DCP_DIR)
        check_metadata(path)
        dcp.load(state, checkpoint_id=path, storage_reader=SafeReader(path), planner=SafePlanner(), no_dist=single)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_options())


def load_single_process_checkpoint(folder: Path, model, optimizer) -> None:
    """A one-process full fine-tuning checkpoint (model.safetensors, optimizer.safetensors/json) into a
    model sharded with FSDP2: every rank reads the full tensors and keeps its shard.

    The one-process optimizer state is keyed by parameter index (the optimizer's order, which the same
    build gives here); DCP's full optimizer state dict is keyed by parameter name, so translate.
    """
    import json

    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    folder = Path(folder)
    names = {id(param): name for name, param in model.named_parameters()}
    order = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
    meta = json.loads((folder / ckpt.OPTIMIZER_JSON).read_text())
    state: dict[str, dict] = {}
    for key, value in [*load_file(str(folder / ckpt.OPTIMIZER_TENSORS)).items(), *meta["scalars"].items()]:
        index, field = key.split(".", 1)
        state.setdefault(order[int(index)], {})[field] = value
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in meta["param_groups"]]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    weights = load_file(str(folder / "model.safetensors"))  # a tied lm_head is not in the file: strict=False
    set_state_dict(model, optimizer, model_state_dict=weights,
                   optim_state_dict={"state": state, "param_groups": groups},
                   options=StateDictOptions(full_state_dict=True, strict=False))
