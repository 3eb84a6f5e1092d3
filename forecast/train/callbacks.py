"""The training callbacks every run uses: the best epoch's weights, and the resumable epoch checkpoint."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

from forecast.process import atomic_path, write_text

CHECKPOINT_META = "last.json"  # beside a cell's last.ckpt: {"epochs_done": k, "saved": unix time}


class BestWeights(pl.Callback):
    """Keeps the weights of the best val_loss epoch in memory (strict improvement), like the papers' checkpoint, and
    that epoch's validation forecasts when the module kept them (``ForecastModule.keep_val_forecasts``): the
    residuals conformal calibration needs, from the very weights restored, without another pass. Those forecasts
    are not saved in a checkpoint; a run resumed after its best epoch calibrates with a pass."""

    def __init__(self) -> None:
        self.best = math.inf
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None
        self.forecasts: list[torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None and float(val) < self.best:
            self.best, self.best_epoch = float(val), trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
            self.forecasts = getattr(module, "val_forecasts", None)

    def restore(self, module: pl.LightningModule) -> None:
        if self.state is not None:
            module.model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:  # saved in an EpochCheckpoint
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.state = state_dict["best"], state_dict["best_epoch"], state_dict["state"]
        self.forecasts = None


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The per-epoch record of every run: train_loss and val_loss (when logged) and the lr the epoch trained at."""
    m = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
    own = getattr(trainer.lightning_module, "epoch_train_loss", lambda: None)()
    if own is not None:  # one process: summed by the module itself (ForecastModule.epoch_train_loss)
        m["train_loss"] = own
    return {**{k: m[k] for k in ("train_loss", "val_loss") if k in m}, "lr": trainer.lightning_module.epoch_lr}


class EpochCheckpoint(Checkpoint):
    """After every epoch, the whole training state in ``<directory>/last.ckpt`` (atomic), to resume from.

    The file is Lightning's checkpoint (weights, optimizer, loop counters, early stopping, the best epoch's
    weights held by :class:`BestWeights`) plus the RNG states (the module's global torch RNG, the train sampler's
    generator in the DataModule), so ``trainer.fit(ckpt_path=..., weights_only=True)`` goes on at the next epoch
    as if never stopped. This callback's own state carries the fit time and the per-epoch losses of the earlier
    processes; ``on_resume(history, last_epoch)`` hands those to the new run. ``last.json`` beside it says which
    epoch the file holds without loading it. Single process only.

    It subclasses Lightning's Checkpoint so that it runs after EarlyStopping in ``on_train_epoch_end`` (the
    monitoring callbacks run last) and saves that epoch's stopping decision too.
    """

    FILE, META = "last.ckpt", CHECKPOINT_META  # saved_epochs reads the META without loading the checkpoint

    def __init__(self, directory: str | os.PathLike, on_resume: Callable[[list[dict[str, float]], int], None] | None = None
                 ) -> None:
        self.dir = Path(directory)
        self.on_resume = on_resume
        self.elapsed_before = 0.0  # fit seconds spent by the processes before this one
        self.history: list[dict[str, float]] = []  # {"epoch", "train_loss", "val_loss", "lr"} per finished epoch
        self.resumed_epoch: int | None = None  # 0-based epoch the resumed checkpoint ended with
        self._stopped = False
        self._t0 = time.perf_counter()
        self._trainer: pl.Trainer | None = None

    @property
    def path(self) -> Path:
        return self.dir / self.FILE

    def resume_path(self) -> Path | None:
        return self.path if self.path.is_file() else None

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.resumed_epoch is None:
            return
        if self._stopped:  # early stopping had ended the fit when the checkpoint was written
            trainer.should_stop = True
        if self.on_resume is not None:
            self.on_resume(list(self.history), self.resumed_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.history.append({"epoch": trainer.current_epoch, **epoch_metrics(trainer)})
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, not only the weights
        write_text(self.dir / self.META, json.dumps({"epochs_done": trainer.current_epoch + 1, "saved": time.time()}))

    def state_dict(self) -> dict[str, Any]:
        stopped = bool(self._trainer.should_stop) if self._trainer is not None else False
        return {"elapsed": self.elapsed(), "history": list(self.history), "stopped": stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict["elapsed"])
        self.history = [dict(h) for h in state_dict["history"]]
        self._stopped = bool(state_dict["stopped"])
        self.resumed_epoch = int(self.history[-1]["epoch"]) if self.history else -1


def prune_checkpoint_folders(directory: str | os.PathLike) -> None:
    """Remove the two folders above a run's checkpoint ``directory`` (``<root>/<name>/<hash>``) when they are empty,
    so that a finished run leaves none behind; a state kept to resume from keeps them."""
    for folder in (Path(directory).parent, Path(directory).parent.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()


def saved_epochs(directory: str | os.PathLike) -> int | None:
    """How many epochs the resumable checkpoint in ``directory`` holds (from its small json, without loading the
    checkpoint), or None when there is none."""
    try:
        return int(json.loads((Path(directory) / CHECKPOINT_META).read_text())["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
