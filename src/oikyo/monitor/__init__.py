"""oikyo.monitor: is a deployed model slow, failing, drifting or getting worse? (guide: docs/monitoring.md)

- :mod:`~oikyo.monitor.quality`: cheap quality signals of each answer (length, degeneration,
  refusal-like answers, JSON validity and schema match, feedback), computed off the request's path.
- :mod:`~oikyo.monitor.drift`: drift detectors on live traffic against a reference dataset (the
  deployed model's training data by default), thresholds calibrated to a stated false-alarm rate
  (with :mod:`~oikyo.monitor.descriptors`, :mod:`~oikyo.monitor.detectors`,
  :mod:`~oikyo.monitor.calibration`, :mod:`~oikyo.monitor.embeddings` and, light for the router and
  the dashboard, :mod:`~oikyo.monitor.drift_records`).
- :mod:`~oikyo.monitor.alerts`: Prometheus alerting and recording rules for the serving metrics,
  written with the deployment's own thresholds (``oikyo deployments alerts NAME --export``).
- :mod:`~oikyo.monitor.events`: what happened to a deployment (alerts delivered by Alertmanager,
  drift alarms), recorded as events that ``oikyo deployments show`` and the dashboard list.

monitor/ reads the gateway's records (served requests, feedback) and metrics; the serving engine
never imports it.
"""
