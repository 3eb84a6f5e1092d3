"""Training progress on the terminal: one line per epoch, and a line now and then within a long epoch."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import lightning.pytorch as pl

from forecast.train.callbacks import epoch_metrics


@dataclass(frozen=True)
class StepProgress:
    """Where a training epoch stands: ``step`` of ``steps`` batches of ``epoch`` of ``epochs`` (1-based), after
    ``seconds`` of that epoch."""

    epoch: int
    epochs: int
    step: int
    steps: int
    seconds: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.step, 1)

    @property
    def epoch_left(self) -> float:
        """Seconds left in this epoch's training batches at the rate so far (validation not counted)."""
        return (self.steps - self.step) * self.seconds_per_step

    @property
    def run_left(self) -> float:
        """Seconds of training batches left if every epoch up to ``epochs`` runs (an upper bound on those: early
        stopping may end it sooner). Validation and the test are not counted: they are not timed until they run."""
        return self.epoch_left + (self.epochs - self.epoch) * self.steps * self.seconds_per_step

    def line(self) -> str:
        return (f"epoch {self.epoch}/{self.epochs}: step {self.step}/{self.steps}, {self.seconds_per_step:.2f} s/step, "
                f"about {max(self.epoch_left, 0.0) / 60:.0f} min of training left in this epoch")


class EpochPrinter(pl.Callback):
    """One line per finished epoch: losses, lr and time (the progress bar's permanent record).

    ``emit`` receives each line; the default prints it to stderr (``forecast benchmark`` routes it to its display).
    With ``step_every`` seconds, ``step_emit`` also receives a :class:`StepProgress` at most that often during a
    training epoch (default: its line on stderr), so an epoch that takes an hour is not an hour of silence.
    """

    def __init__(self, emit: Callable[[str], None] | None = None, step_every: float | None = None,
                 step_emit: Callable[[StepProgress], None] | None = None) -> None:
        self.emit = emit
        self.step_every = step_every
        self.step_emit = step_emit
        self._t0 = self._last = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.step_every is None or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        steps = trainer.num_training_batches
        if now - self._last < self.step_every or not math.isfinite(steps) or batch_idx + 1 >= steps:
            return
        self._last = now
        info = StepProgress(trainer.current_epoch + 1, trainer.max_epochs, batch_idx + 1, int(steps), now - self._t0)
        if self.step_emit is not None:
            self.step_emit(info)
        else:
            print(f"  {info.line()}", file=sys.stderr, flush=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = epoch_metrics(trainer)
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        parts += [f"{k} {record[k]:.4f}" for k in ("train_loss", "val_loss") if k in record]
        parts.append(f"lr {record['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        if self.emit is not None:
            self.emit("  ".join(parts))
        else:
            print("  ".join(parts), file=sys.stderr, flush=True)
