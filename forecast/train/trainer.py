"""The Trainer factory: one device by default, DDP when asked, nothing written to the working directory."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, TQDMProgressBar

from forecast.config import TrainConfig
from forecast.errors import ForecastError
from forecast.train.progress import EpochPrinter


def check_precision(cfg: TrainConfig) -> None:
    """One line, before a run exists, for a precision this installation cannot train at (else Lightning's
    ModuleNotFoundError, a traceback, once the run had begun)."""
    if cfg.precision.startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise ForecastError(f"train.precision '{cfg.precision}' needs NVIDIA's transformer_engine package and a GPU "
                            "(pip install 'transformer_engine[pytorch]'); on this installation use 32-true or "
                            "bf16-mixed.")


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
