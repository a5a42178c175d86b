"""oikyo.jobs: training runs as durable jobs.

- :mod:`~oikyo.jobs.queue`: states and transitions (submit, claim with a lease, heartbeat,
  complete / fail / cancel, requeue), safe with many workers on SQLite and PostgreSQL.
- :mod:`~oikyo.jobs.training`: validate a config, resolve its references, queue it; run the recipe.
- :mod:`~oikyo.jobs.execution`: one claimed run: heartbeats, live metrics, checkpoints, the end.
- :mod:`~oikyo.jobs.worker`: the worker loop (``oikyo worker``, ``python -m oikyo.jobs.worker``).
- :mod:`~oikyo.jobs.autostart`: a detached background worker for local use.
- :mod:`~oikyo.jobs.runs`: the runs service API (list, show, logs, metrics, cancel, resume, reproduce).
- :mod:`~oikyo.jobs.model_versions`: trained models with their lineage.
- :mod:`~oikyo.jobs.metrics`, :mod:`~oikyo.jobs.checkpoints`, :mod:`~oikyo.jobs.exporters`,
  :mod:`~oikyo.jobs.failures`: what the above are made of.
"""
