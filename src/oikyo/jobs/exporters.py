"""Optional metric export to TensorBoard, MLflow and Weights & Biases.

Turned on by the run's config (the ``train.report_to`` list, for example
``--set train.report_to=[tensorboard]``). Each exporter imports its library only when
enabled; when the library is not installed the run goes on and the log says so once. An exporter
that fails while training is switched off (with one log line) instead of failing the run.

Usage::

    sinks = open_exporters(["tensorboard"], run_dir=run_dir, run_id=run.id, params=run.config, log=log)
    for sink in sinks: sink.log(step, {"loss": 2.1})
    close_all(sinks)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

KNOWN = ("tensorboard", "mlflow", "wandb")
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def enabled(config: dict) -> list[str]:
    """The exporters a resolved config asks for: ``train.report_to`` (validated by the training config)."""
    value = (config.get("train") or {}).get("report_to") or []
    names = [value] if isinstance(value, str) else value
    return [str(name).lower() for name in names]


class _TensorBoard:
    def __init__(self, run_dir: Path, run_id: str, params: dict):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, run_dir: Path, run_id: str, params: dict):
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=run_id)
        flat = _flatten(params)
        mlflow.log_params({k: str(v)[:250] for k, v in list(flat.items())[:100]})

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class _Wandb:
    def __init__(self, run_dir: Path, run_id: str, params: dict):
        import wandb

        self.run = wandb.init(project="oikyo", name=run_id, id=run_id, resume="allow", config=params,
                              dir=str(run_dir))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _Wandb}


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _Guarded:
    """Wraps an exporter so that its first error switches it off instead of failing the run."""

    def __init__(self, name: str, inner, log: Callable[[str], None]):
        self.name, self.inner, self.say = name, inner, log

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.inner is None or not values:
            return
        try:
            self.inner.log(step, values)
        except Exception as error:  # noqa: BLE001 - export is optional; training goes on
            self.say(f"{self.name} export stopped: {error.__class__.__name__}: {error}")
            self.inner = None

    def close(self) -> None:
        if self.inner is not None:
            try:
                self.inner.close()
            except Exception as error:  # noqa: BLE001
                self.say(f"{self.name} export did not close cleanly: {error}")


def open_exporters(names: list[str], *, run_dir: Path, run_id: str, params: dict,
                   log: Callable[[str], None]) -> list[_Guarded]:
    """Exporters for ``names``; the unknown and the uninstalled are skipped with one log line each."""
    sinks = []
    for name in names:
        if name not in _CLASSES:
            log(f"metric export {name!r} is unknown (known: {', '.join(KNOWN)}); skipping it")
            continue
        try:
            sinks.append(_Guarded(name, _CLASSES[name](run_dir, run_id, params), log))
        except ImportError:
            log(f"metric export to {name} is on but {INSTALL[name]} is not installed; skipping it "
                f"(pip install {INSTALL[name]})")
        except Exception as error:  # noqa: BLE001 - a misconfigured exporter must not fail the run
            log(f"metric export to {name} could not start ({error.__class__.__name__}: {error}); skipping it")
    return sinks


def close_all(sinks: list[_Guarded]) -> None:
    for sink in sinks:
        sink.close()
