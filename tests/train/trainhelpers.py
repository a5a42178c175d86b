"""Helpers shared by the training tests (imported by name: tests/ folders are not packages)."""

from __future__ import annotations

from dataclasses import dataclass, field

FAST = ["train.num_threads=1", "data.max_eval_rows=16"]


def chat_rows(n: int = 32) -> list[dict]:
    """A small, very repetitive conversation dataset (easy to fit)."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Say the word number {i % 4}."},
                {"role": "assistant", "content": f"The word is {['apple', 'river', 'stone', 'cloud'][i % 4]}."},
            ]
        }
        for i in range(n)
    ]


def preference_rows(n: int = 24) -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": f"Greet person {i % 3}."}],
            "chosen": "Hello, nice to meet you!",
            "rejected": "Go away.",
        }
        for i in range(n)
    ]


@dataclass
class Run:
    """What one run_training call produced."""

    result: object
    metrics: list[tuple[int, dict]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def series(self, key: str) -> list[float]:
        return [m[key] for _, m in self.metrics if key in m]


def run_direct(overrides: list[str], run_dir, model_dir, rows: list[dict], stop_after: int | None = None):
    """``run_training`` in this process on ``rows`` (validation: the first 6), cancelled once
    ``stop_after`` steps have reported (never when None); returns (result, metrics by step)."""
    from oikyo.train.config import load_config
    from oikyo.train.runner import run_training

    metrics = {}
    result = run_training(
        load_config(None, overrides), run_dir=run_dir, model_dir=model_dir, train_rows=lambda: rows,
        eval_rows=lambda: rows[:6], on_metrics=lambda step, m: metrics.setdefault(step, m),
        should_stop=lambda: stop_after is not None and len(metrics) >= stop_after, log=lambda m: None,
    )
    return result, metrics
