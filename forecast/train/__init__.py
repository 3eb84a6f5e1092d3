"""Training: the LightningModule, its callbacks, progress lines and the Trainer factory (no MLflow here)."""

from forecast.train.callbacks import (CHECKPOINT_META, BestWeights, EpochCheckpoint, epoch_metrics,
                                      prune_checkpoint_folders, saved_epochs)
from forecast.train.module import ForecastModule
from forecast.train.objective import lr_factor, make_loss
from forecast.train.progress import EpochPrinter, StepProgress
from forecast.train.trainer import check_precision, make_trainer

__all__ = ["CHECKPOINT_META", "BestWeights", "EpochCheckpoint", "EpochPrinter", "ForecastModule", "StepProgress",
           "check_precision", "epoch_metrics", "lr_factor", "make_loss", "make_trainer", "prune_checkpoint_folders",
           "saved_epochs"]
