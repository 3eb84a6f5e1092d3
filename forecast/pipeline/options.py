"""How a training run is asked to run (:class:`TrainOptions`) and what it gives back (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np


@dataclass
class TrainOptions:
    tracking_uri: str | None = None
    quiet: bool = False
    experiment: str | None = None  # default: the dataset's name
    run_name: str | None = None
    parent_run_id: str | None = None  # nested run (tuning trials, benchmark cells)
    tags: dict[str, str] = field(default_factory=dict)
    evaluate_test: bool = True  # False while tuning: the test split is never loaded
    callbacks: list[pl.Callback] = field(default_factory=list)
    log_artifacts: bool = True
    stopped_by: tuple[type[Exception], ...] = ()  # exceptions that end the run KILLED, not FAILED (a pruned trial)
    # Save the training state after every epoch here and resume from it if it is there (benchmark cells); the
    # directory is removed once the run has FINISHED. One process only.
    checkpoint_dir: Path | None = None
    # Fine-tuning (forecast.pipeline.finetune): start from this Parent's weights, bases and (unless refit_scaler)
    # scaler, and score it on this run's validation windows first (metric parent_val_loss).
    init: Any = None
    refit_scaler: bool = False


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    run_name: str
    tracking_uri: str
    best_val_loss: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    n_params: int
    metrics: dict[str, float]
    step_mse: np.ndarray | None = None
    is_global_zero: bool = True  # False on the other DDP ranks, which record nothing
    setting: str = ""  # what was forecast from what, when not every column from every column (Roles.describe)
    experiment: str = ""  # the MLflow experiment's name (--experiment, else the data's name: "shop" for shop.csv)
