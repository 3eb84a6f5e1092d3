"""One trial: sample, resolve the config, train without the test split, record the trial's state in MLflow."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from optuna_integration import PyTorchLightningPruningCallback

from forecast import tracking
from forecast.config import DataConfig
from forecast.data.series import Series, load_series
from forecast.pipeline import TrainOptions, train
from forecast.process import owner
from forecast.resolve import resolve
from forecast.tuning.space import suggest


class PruningCallback(PyTorchLightningPruningCallback):
    """optuna-integration's Lightning pruning callback, remembering the last epoch it reported.

    Defined at import, in the main thread: importing this module before any trial starts means n_jobs > 1
    trial threads never race on a first import of Lightning or MLflow."""

    last: tuple[int, float] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None:
            self.last = (int(pl_module.current_epoch), float(value))
        super().on_validation_end(trainer, pl_module)


def _series_key(data: DataConfig) -> DataConfig:
    """What a loaded series depends on: everything in the data config but the loader workers."""
    return dataclasses.replace(data, num_workers=0)


class Objective:
    """One trial: sample, resolve the config, train without the test split, record the state in MLflow."""

    def __init__(self, *, model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
                 space: dict[str, dict[str, Any]], study_name: str, parent_run_id: str, experiment: str,
                 experiment_id: str, tracking_uri: str, pruning: bool, series: Series,
                 series_data: DataConfig) -> None:
        self.model, self.dataset, self.overrides, self.user_yaml = model, dataset, overrides, user_yaml
        self.space, self.study_name, self.parent_run_id = space, study_name, parent_run_id
        self.experiment, self.experiment_id, self.tracking_uri = experiment, experiment_id, tracking_uri
        self.pruning = pruning
        self._series: dict[DataConfig, Series] = {_series_key(series_data): series}
        self._lock = threading.Lock()
        self.running: set[int] = set()  # trial numbers this process is running now
        self.started: list[int] = []
        self.first_error: str | None = None

    def series_for(self, data: DataConfig) -> Series:
        """The loaded series for a data config, loaded once (a search over seq_len loads one per value)."""
        key = _series_key(data)
        with self._lock:
            if key not in self._series:
                self._series[key] = load_series(data, progress=False)
            return self._series[key]

    def __call__(self, trial: optuna.trial.Trial) -> float:
        with self._lock:
            self.running.add(trial.number)
            self.started.append(trial.number)
        trial.set_user_attr("worker", owner())  # who runs it: a later start fails it if this process died
        sampled: dict[str, Any] = {}
        callback = None
        try:

            callback = PruningCallback(trial, monitor="val_loss") if self.pruning else None
            sampled = suggest(trial, self.space)
            cfg = resolve(self.model, self.dataset, {**self.overrides, **sampled}, self.user_yaml)
            tags = {"study": self.study_name, "tune_role": "trial", "trial_number": str(trial.number),
                    "trial_state": "RUNNING"}
            opts = TrainOptions(tracking_uri=self.tracking_uri, quiet=True, experiment=self.experiment,
                                run_name=f"{self.study_name}_t{trial.number}", parent_run_id=self.parent_run_id,
                                tags=tags, evaluate_test=False, callbacks=[callback] if callback else [],
                                log_artifacts=False, stopped_by=(optuna.TrialPruned,))
            result = train(cfg, opts, series=self.series_for(cfg.data))
            trial.set_user_attr("mlflow_run_id", result.run_id)
            trial.set_user_attr("epochs_run", result.epochs_run)
            self._record(trial, "COMPLETE", sampled, run_id=result.run_id)
            return float(result.best_val_loss)
        except optuna.TrialPruned as exc:
            last = callback.last if callback is not None else None
            self._record(trial, "PRUNED", sampled, note=str(exc), last=last)
            raise
        except KeyboardInterrupt:  # Optuna marks the trial FAILED and stops; the pipeline ended its run KILLED
            self._record(trial, "FAILED", sampled, note="interrupted (Ctrl-C)", quiet_errors=True)
            raise
        except Exception as exc:
            note = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:480]
            with self._lock:
                self.first_error = self.first_error or f"trial {trial.number}: {note}"
            trial.set_user_attr("error", note)
            self._record(trial, "FAILED", sampled, note=note)
            raise
        finally:
            with self._lock:
                self.running.discard(trial.number)

    def _child_run_id(self, mlf: MlflowClient, number: int) -> str | None:
        found = mlf.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.trial_number = '{number}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _record(self, trial: optuna.trial.Trial, state: str, sampled: dict[str, Any], run_id: str | None = None,
                note: str | None = None, last: tuple[int, float] | None = None, quiet_errors: bool = False) -> None:
        """Tag the trial's nested MLflow run with its state and sampled params (creating one if none exists)."""
        try:
            mlf = tracking.client(self.tracking_uri)
            run_id = run_id or self._child_run_id(mlf, trial.number)
            if run_id is None:  # failed before training started: keep a record of the attempt anyway
                run = mlf.create_run(self.experiment_id, run_name=f"{self.study_name}_t{trial.number}", tags={
                    "mlflow.parentRunId": self.parent_run_id, "study": self.study_name, "tune_role": "trial",
                    "trial_number": str(trial.number), "model": self.model, "dataset": self.experiment})
                run_id = run.info.run_id
                mlf.set_terminated(run_id, "FAILED")
            tags = {"trial_state": state}
            if note:
                tags["trial_note"] = note[:480]
            if state == "PRUNED" and last is not None:
                tags["pruned_at_epoch"] = str(last[0])
            params = tracking.params_of({f"trial.{k}": v for k, v in sampled.items()})
            metrics = []
            if state == "PRUNED" and last is not None and math.isfinite(last[1]):
                # The pruning epoch's val_loss: the per-epoch logger runs after validation, so it never saw it.
                metrics.append(Metric("val_loss", last[1], int(time.time() * 1000), last[0]))
            mlf.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                          tags=[RunTag(k, v) for k, v in tags.items()])
            trial.set_user_attr("mlflow_run_id", run_id)
        except Exception:
            if not quiet_errors:
                raise
