"""A training run in its own process, for the exact-resume test (which SIGKILLs it mid-epoch).

    python resume_child.py MODEL_DIR RUN_DIR METRICS_JSONL OVERRIDES_JSON [SLEEP_S]

Every metrics dict is appended to METRICS_JSONL as one JSON line; SLEEP_S slows each step so
the parent can kill the process between checkpoints.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trainhelpers import chat_rows


def main() -> None:
    model_dir, run_dir, metrics_path, overrides = sys.argv[1:5]
    sleep_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    rows = chat_rows(40)
    config = load_config(None, json.loads(overrides))

    def on_metrics(step: int, metrics: dict) -> None:
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\n")
        time.sleep(sleep_s)

    run_training(config, run_dir=Path(run_dir), model_dir=Path(model_dir), train_rows=lambda: rows,
                 eval_rows=lambda: rows[:8], on_metrics=on_metrics, should_stop=lambda: False, log=print)


if __name__ == "__main__":
    main()
