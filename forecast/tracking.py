"""MLflow: where runs go, experiments, per-epoch logging and the run's records.

The default store is ``sqlite:///mlflow.db`` in the working directory, with artifacts in ``mlartifacts/``
beside it (never a ``./mlruns`` file store). ``--tracking-uri`` and ``MLFLOW_TRACKING_URI`` override it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import forecast

DEFAULT_DB = "mlflow.db"


def resolve_uri(uri: str | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    if "://" not in uri:  # a bare path to a sqlite file
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a local sqlite store keeps artifacts: ``mlartifacts/`` beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def checkpoint_root(uri: str) -> Path:
    """Where benchmark cells keep their resumable training state: ``checkpoints/`` beside a local sqlite
    database, else ``~/.cache/forecast/checkpoints``."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "checkpoints"
    return Path.home() / ".cache" / "forecast" / "checkpoints"


CHECKPOINT_META = "last.json"  # beside a cell's last.ckpt: {"epochs_done": k, "saved": unix time}


def saved_epochs(directory: str | os.PathLike) -> int | None:
    """How many epochs the resumable checkpoint in ``directory`` holds (from its small json, without loading the
    checkpoint or Lightning), or None when there is none."""
    import json

    try:
        return int(json.loads((Path(directory) / CHECKPOINT_META).read_text())["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def quiet_logs() -> None:
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking", "lightning", "lightning.pytorch",
                 "lightning.fabric", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run at" lines, tracking servers


def client(uri: str):
    quiet_logs()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(mlf, name: str, uri: str) -> str:
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(uri)
    return mlf.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def base_tags(dataset: str, model: str, data_sha256: str) -> dict[str, str]:
    tags = {"dataset": dataset, "model": model, "data_sha256": data_sha256, "forecast_version": forecast.__version__}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def params_of(flat: dict[str, Any]) -> dict[str, str]:
    """MLflow params: stringified, None as an empty string, 500 chars at most."""
    return {k: ("" if v is None else str(v))[:500] for k, v in flat.items()}


def _epoch_logger_class() -> type:
    import lightning.pytorch as pl

    class EpochLogger(pl.Callback):
        """Logs train_loss, val_loss and lr to an MLflow run after every epoch (rank 0 only)."""

        def __init__(self, mlf, run_id: str) -> None:
            self.mlf, self.run_id = mlf, run_id

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if not trainer.is_global_zero or trainer.sanity_checking:
                return
            import time

            from mlflow.entities import Metric

            from forecast.training import epoch_metrics

            now = int(time.time() * 1000)
            step = trainer.current_epoch
            values = epoch_metrics(trainer)
            self.mlf.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    EpochLogger.__qualname__ = "EpochLogger"
    return EpochLogger


def __getattr__(name: str) -> Any:
    """``EpochLogger`` (a Lightning callback) is defined on first use, so that importing this module for the
    store helpers (``forecast predict``) does not import Lightning, which takes seconds."""
    if name == "EpochLogger":
        cls = _epoch_logger_class()
        globals()["EpochLogger"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
