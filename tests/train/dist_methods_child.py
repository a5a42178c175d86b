"""A torchrun entry point for test_distributed_methods: several runs in turn inside ONE process group.

    python -m torch.distributed.run --standalone --nproc-per-node 2 dist_methods_child.py CASES_JSON RESULT_JSON

CASES_JSON: {case: {"overrides": [...], "rows": [...], "model_dir": ..., "run_dir": ...}}. Starting two
processes costs about 20 s on the 2-core test machine (imports, rendezvous), more than a tiny run
itself, so one group trains every case instead of one torchrun per case. Each rank joins the group
as :func:`oikyo.train.launch.main` does and calls ``run_training``, which then trains inside the group
(the path every worker-launched rank takes). Rank 0 writes {case: {"metrics": {step: ...}, "logs":
[...]}, "global_mean": {...}} to RESULT_JSON. The "global_mean" check runs first, before any
training: :func:`oikyo.train.distributed.global_mean` over a stand-in share on rank 0 (value 5, which
must not count) and a real one on rank 1 (values 1 and 4), with and without the stand-in mark.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

from disthelpers import EXACT


def main(cases_path: str, result_path: str) -> None:
    from oikyo.train import distributed
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    rank = int(os.environ["RANK"])
    distributed.init("cpu")
    results = {"global_mean": global_means(rank)}
    for case, spec in json.loads(Path(cases_path).read_text()).items():
        metrics, logs = {}, []
        run_training(
            load_config(None, [*EXACT, "train.nproc=2", *spec["overrides"]]), run_dir=Path(spec["run_dir"]),
            model_dir=Path(spec["model_dir"]), train_rows=lambda: list(spec["rows"]),
            eval_rows=lambda: list(spec["rows"][:6]), on_metrics=lambda step, m: metrics.setdefault(step, dict(m)),
            should_stop=lambda: False, log=logs.append,
        )
        results[case] = {"metrics": metrics, "logs": logs}
    if rank == 0:
        Path(result_path).write_text(json.dumps(results))
    distributed.shutdown()


def global_means(rank: int) -> dict:
    import torch

    from oikyo.train import distributed

    share = torch.tensor([5.0]) if rank == 0 else torch.tensor([1.0, 4.0])  # KTO: mismatched pairs' log-ratios
    return {"marked": distributed.global_mean(share, real=rank != 0).item(),
            "unmarked": distributed.global_mean(share).item()}


if __name__ == "__main__":
    main(*sys.argv[1:3])
    gc.freeze()  # as oikyo.train.launch's ranks: no final garbage collection over torch's objects at exit
