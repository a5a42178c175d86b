"""A torchrun entry point for test_distributed_methods: several runs in turn inside ONE process group.

    python -m torch.distributed.run --standalone --nproc-per-node 2 dist_methods_child.py CASES_JSON RESULT_JSON
    python -m torch.distributed.run --standalone --nproc-per-node 3 dist_methods_child.py --global-mean RESULT_JSON

CASES_JSON: {case: {"overrides": [...], "rows": [...], "model_dir": ..., "run_dir": ...}}. Starting two
processes costs about 20 s on the 2-core test machine (imports, rendezvous), more than a tiny run
itself, so one group trains every case instead of one torchrun per case. Each rank joins the group
as :func:`oikyo.train.launch.main` does and calls ``run_training``, which then trains inside the group
(the path every worker-launched rank takes). Rank 0 writes {case: {"metrics": {step: ...}, "logs":
[...]}} to RESULT_JSON.

``--global-mean``: no training, only :func:`oikyo.train.distributed.global_mean` over the shares of a
2-item batch at 3 ranks (one of them a stand-in, which must not count); rank 0 writes the means.
"""

from __future__ import annotations

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
    results = {}
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


def global_means(result_path: str) -> None:
    import torch

    from oikyo.train import distributed

    distributed.init("cpu")
    dist = distributed.current()
    values = {7: 1.0, 8: 4.0}  # item -> its value (KTO: a mismatched pair's log-ratio)
    items, real = distributed.share([7, 8], dist)  # rank 0: a stand-in copy of item 7
    share = torch.tensor([values[i] for i in items])
    means = {"marked": distributed.global_mean(share, real).item(), "unmarked": distributed.global_mean(share).item()}
    if dist.rank == 0:
        Path(result_path).write_text(json.dumps({"real": real, **means}))
    distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "--global-mean":
        global_means(sys.argv[2])
    else:
        main(*sys.argv[1:3])
