"""One LightningModule for every forecaster, the losses, the lr schedules and the Trainer factory."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from torch import nn

from forecast.config import TrainConfig
from forecast.tracking import CHECKPOINT_META


def make_loss(name: str, alpha: float = 0.5):
    """``(pred, target) -> scalar``: mse, mae, or weighted_l1 = mean(|err| * (t+1)^-alpha) (not renormalized)."""
    if name == "mse":
        return lambda p, y: (p - y).pow(2).mean()
    if name == "mae":
        return lambda p, y: (p - y).abs().mean()

    def weighted_l1(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.arange(p.shape[1], device=p.device, dtype=p.dtype)
        w = (t + 1.0).pow(-alpha).view(1, -1, 1)  # [1, H, 1]
        return ((p - y).abs() * w).mean()

    return weighted_l1


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base lr during 0-based ``epoch`` (TSLib's adjust_learning_rate, applied per epoch)."""
    if cfg.lradj == "type1":  # lr0, lr0, lr0/2, lr0/4, ...
        return 0.5 ** max(epoch - 1, 0)
    if cfg.lradj == "cosine":
        return 1.0 if epoch == 0 else 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lradj == "hold_decay":  # OLinear: hold for lr_hold_epochs, then *lr_decay per epoch
        return 1.0 if epoch < cfg.lr_hold_epochs else cfg.lr_decay ** (epoch - cfg.lr_hold_epochs + 1)
    return 1.0


class ForecastModule(pl.LightningModule):
    """Wraps any registered backbone: loss, optimizer, schedule, and sample-weighted evaluation.

    Test metrics are sums over every window, reduced once at the end: MSE/MAE on the standardized scale
    (the papers' convention), the same in original units, and the MSE of each horizon step. Under DDP every
    rank sums over its own shard of the windows and the sums are added over ranks before dividing, so the
    metrics equal the single-process ones.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.loss_fn = make_loss(cfg.loss, cfg.loss_alpha)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32), persistent=False)
        self._sums: dict[str, torch.Tensor] = {}
        self.test_metrics: dict[str, float] = {}
        self.step_mse: np.ndarray | None = None
        self.epoch_lr: float | None = None  # the lr the current epoch trains at
        self._cuda_rng: torch.Tensor | None = None  # a resumed GPU run's generator state, set at train start
        # torch.compile'd forward (train.compile); kept out of the module tree so the state dict is unchanged.
        object.__setattr__(self, "_compiled", torch.compile(model) if cfg.compile else None)

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None) -> torch.Tensor:
        return self.model(x, x_mark, y_mark)

    def _predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        net = self._compiled if self._compiled is not None else self.model
        return net(batch["x"], batch.get("x_mark"), batch.get("y_mark"))

    def on_train_epoch_start(self) -> None:
        # Read here: by the end of the epoch the per-epoch scheduler has already stepped to the next epoch's lr.
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        k = self.cfg.partial_variates
        if 0 < k < batch["x"].shape[-1]:
            # Partial-variate training (iTransformer): a fresh random subset of k variates per batch.
            keep = torch.randperm(batch["x"].shape[-1], device=batch["x"].device)[:k]
            batch = {**batch, "x": batch["x"][..., keep], "y": batch["y"][..., keep]}
        loss = self.loss_fn(self._predict(batch), batch["y"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["x"].shape[0],
                 sync_dist=True)  # under DDP: the mean over ranks (every rank takes the same number of batches)
        return loss

    # -- evaluation: exact sums over all windows ------------------------------------------------------
    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self._sums[key] = self._sums[key] + value if key in self._sums else value

    def on_validation_epoch_start(self) -> None:
        self._sums = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self._predict(batch)
        n = batch["x"].shape[0]
        self._accumulate("val_loss", self.loss_fn(pred, batch["y"]) * n)
        self._accumulate("val_n", torch.tensor(float(n), device=pred.device))

    def _reduced_sums(self) -> dict[str, torch.Tensor]:
        """This epoch's sums, added over all ranks under DDP (every rank has the same keys and shapes)."""
        if self.trainer.world_size == 1:
            return self._sums
        return {k: self.trainer.strategy.reduce(v.clone(), reduce_op="sum") for k, v in sorted(self._sums.items())}

    def on_validation_epoch_end(self) -> None:
        sums = self._reduced_sums()
        # The same value on every rank; sync_dist only keeps Lightning from warning about it.
        self.log("val_loss", (sums["val_loss"] / sums["val_n"]).float(), prog_bar=True, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._sums = {}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, y = self._predict(batch), batch["y"]  # [B, H, N]
        err = pred - y
        err_orig = err * self.std  # the same error in original units (the mean cancels)
        self._accumulate("sse", err.pow(2).sum())
        self._accumulate("sae", err.abs().sum())
        self._accumulate("sse_orig", err_orig.pow(2).sum())
        self._accumulate("sae_orig", err_orig.abs().sum())
        self._accumulate("sse_step", err.pow(2).sum(dim=(0, 2)))  # [H]
        self._accumulate("n", torch.tensor(float(err.numel()), device=err.device))
        self._accumulate("windows", torch.tensor(float(err.shape[0]), device=err.device))

    def on_test_epoch_end(self) -> None:
        s = self._reduced_sums()
        n = s["n"]
        per_step_n = n / s["sse_step"].numel()
        self.test_metrics = {
            "test_mse": float(s["sse"] / n),
            "test_mae": float(s["sae"] / n),
            "test_mse_orig": float(s["sse_orig"] / n),
            "test_mae_orig": float(s["sae_orig"] / n),
            "test_windows": float(s["windows"]),
        }
        self.step_mse = (s["sse_step"] / per_step_n).cpu().numpy()
        for key, value in self.test_metrics.items():
            self.log(key, value, sync_dist=True)  # the same value on every rank

    # -- resuming (EpochCheckpoint): the global RNG drives dropout and partial-variate draws --------------
    # On a GPU dropout draws from the device's generator, so its state travels too. Lightning restores a
    # single-device run before it moves the module to the GPU, so that state is set when training starts (a
    # run resumed on another kind of device goes on with the CPU state alone).
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["forecast_rng"] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            checkpoint["forecast_rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("forecast_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            self._cuda_rng = rng.get("cuda")

    def on_train_start(self) -> None:
        state, self._cuda_rng = self._cuda_rng, None
        if state is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(self.cfg, epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class BestWeights(pl.Callback):
    """Keeps the weights of the best val_loss epoch in memory (strict improvement), like the papers' checkpoint."""

    def __init__(self) -> None:
        self.best = math.inf
        self.best_epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val_loss")
        if val is not None and float(val) < self.best:
            self.best, self.best_epoch = float(val), trainer.current_epoch
            self.state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}

    def restore(self, module: ForecastModule) -> None:
        if self.state is not None:
            module.model.load_state_dict(self.state)

    def state_dict(self) -> dict[str, Any]:  # saved in an EpochCheckpoint
        return {"best": self.best, "best_epoch": self.best_epoch, "state": self.state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.state = state_dict["best"], state_dict["best_epoch"], state_dict["state"]


def epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The per-epoch record of every run: train_loss and val_loss (when logged) and the lr the epoch trained at."""
    m = trainer.callback_metrics
    return {**{k: float(m[k]) for k in ("train_loss", "val_loss") if k in m}, "lr": trainer.lightning_module.epoch_lr}


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

    FILE, META = "last.ckpt", CHECKPOINT_META  # tracking.saved_epochs reads the META without Lightning

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
        import shutil

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
        tmp = self.dir / f".{self.FILE}.{os.getpid()}.tmp"
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, not only the weights
        os.replace(tmp, self.path)
        meta_tmp = self.dir / f".{self.META}.{os.getpid()}.tmp"
        meta_tmp.write_text(json.dumps({"epochs_done": trainer.current_epoch + 1, "saved": time.time()}))
        os.replace(meta_tmp, self.dir / self.META)

    def state_dict(self) -> dict[str, Any]:
        stopped = bool(self._trainer.should_stop) if self._trainer is not None else False
        return {"elapsed": self.elapsed(), "history": list(self.history), "stopped": stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict["elapsed"])
        self.history = [dict(h) for h in state_dict["history"]]
        self._stopped = bool(state_dict["stopped"])
        self.resumed_epoch = int(self.history[-1]["epoch"]) if self.history else -1


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


def make_trainer(
    cfg: TrainConfig,
    callbacks: list[pl.Callback],
    quiet: bool = False,
    root_dir: str | None = None,
) -> pl.Trainer:
    """A Trainer that writes nothing to the working directory (no lightning_logs/; checkpoints only through an
    :class:`EpochCheckpoint` in ``callbacks``, in its own directory).

    ``cfg.devices`` and ``cfg.num_nodes`` > 1 train with DDP (gloo on the CPU, NCCL on GPUs). Lightning's launcher
    runs the same command again in one child process per extra local device; on the CPU each rank then uses
    ``cpu_count // devices`` torch threads unless ``OMP_NUM_THREADS`` is set (two ranks that each spin two
    OpenMP threads on two cores run many times slower).
    """
    import warnings

    from lightning.pytorch.callbacks import EarlyStopping

    # Lightning 2.6 builds torch's deprecated LeafSpec during fit; torch 2.13 warns about it once per
    # process, which only tells the user about Lightning's internals.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # On a machine with more than two cores Lightning suggests DataLoader workers for every loader, three lines
    # per run. Our batches are slices of one in-memory tensor (benchmarks/results/data_pipeline.md: 6% of a
    # DLinear step), so worker processes would only add start-up time; data.num_workers is there if wanted.
    warnings.filterwarnings("ignore", message=r"The '\w+' does not have many workers", category=UserWarning)
    callbacks = [EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience, min_delta=0.0), *callbacks]
    bar = not quiet and sys.stderr.isatty()
    if bar:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar(leave=False))
    if not quiet:  # with no bar (a log file), a line on the running epoch every 5 minutes
        callbacks.append(EpochPrinter(step_every=None if bar else 300.0))
    limit = cfg.limit_train_batches
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=cfg.precision,
        logger=False,
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),  # only an EpochCheckpoint
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
        limit_train_batches=int(limit) if limit > 1 else limit,
        limit_val_batches=int(cfg.limit_val_batches) if cfg.limit_val_batches > 1 else cfg.limit_val_batches,
        strategy=cfg.strategy,  # auto: one device, or DDP when devices x num_nodes > 1
        num_nodes=cfg.num_nodes,
        use_distributed_sampler=False,  # the DataModule shards the windows itself (exact val/test metrics)
        gradient_clip_val=cfg.gradient_clip or None,
        callbacks=callbacks,
        default_root_dir=root_dir,
        deterministic=False,
    )
