"""oikyo.evaluate: did fine-tuning help, and what did it cost? (user guide: docs/evaluation.md)

- :mod:`~oikyo.evaluate.metrics`: the metric registry (built-ins and ``@metric`` user metrics).
- :mod:`~oikyo.evaluate.runner`: one model and its baselines (base, few-shot) on a dataset split.
- :mod:`~oikyo.evaluate.backend`: batched generation through the shared engine, teacher-forced loss.
- :mod:`~oikyo.evaluate.jobs`: evaluations as durable jobs in the shared queue (runs of kind ``eval``).
- :mod:`~oikyo.evaluate.records`: stored evaluations, per-example artifacts, the leaderboard.
- :mod:`~oikyo.evaluate.compare` / :mod:`~oikyo.evaluate.bootstrap`: paired bootstrap comparisons.
- :mod:`~oikyo.evaluate.forgetting`: the general-ability probe and the forgetting number.
- :mod:`~oikyo.evaluate.guards`: refuse to score a model on its own training rows.
- :mod:`~oikyo.evaluate.human`: blind pairwise human rating of two models' answers, win rate with a CI.
- :mod:`~oikyo.evaluate.gate`: ``--gate "accuracy>=0.8,forgetting<=0.05"``.
- :mod:`~oikyo.evaluate.summary`: side-by-side tables and :func:`evaluate_against_base` (quickstart).
"""


def evaluate_against_base(*args, **kwargs):
    """See :func:`oikyo.evaluate.summary.evaluate_against_base` (imported lazily: it loads torch)."""
    from oikyo.evaluate.summary import evaluate_against_base as run

    return run(*args, **kwargs)
