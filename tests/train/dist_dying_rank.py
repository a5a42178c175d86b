"""A torchrun entry point for the failure test: rank 1 dies at its third optimizer step.

    DYING_RANK_HOW=raise|exit python -m torch.distributed.run ... -m dist_dying_rank SPEC

``raise``: an exception (the rank reports why); ``exit``: os._exit, as a killed process would.
"""

from __future__ import annotations

import os
import sys

from oikyo.train import launch, runner

_step = runner.Session._optimizer_step


def _dying_step(self, recipe, group, units_per_step):
    if self.rank == 1 and self.state.step == 2:
        if os.environ.get("DYING_RANK_HOW") == "exit":
            os._exit(7)
        raise RuntimeError("rank 1 lost its disk")
    return _step(self, recipe, group, units_per_step)


runner.Session._optimizer_step = _dying_step

if __name__ == "__main__":
    sys.exit(launch.main(sys.argv[1:]))
