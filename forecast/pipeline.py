"""The one training path: data -> model -> Lightning fit -> best weights -> test -> MLflow records.

``forecast train``, tuning trials and benchmark cells all call :func:`train`.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

from forecast import tracking
from forecast.config import RunConfig
from forecast.data.datamodule import ForecastDataModule
from forecast.data.series import Series
from forecast.errors import ForecastError
from forecast.models import ModelContext, create_model
from forecast.training import BestWeights, EpochCheckpoint, ForecastModule, make_trainer


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
    # Save the training state after every epoch here and resume from it if it is there (benchmark cells); the
    # directory is removed once the run has FINISHED. One process only.
    checkpoint_dir: Path | None = None


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


def data_extras(cfg: RunConfig, series: Series) -> dict[str, torch.Tensor]:
    """Data-derived matrices a model asks for through its config (OrthoTrans Q), from the train split only."""
    if not getattr(cfg.model, "orthotrans", False):
        return {}
    from forecast.data.store import cache_dir
    from forecast.layers.orthotrans import orthotrans_extras

    return orthotrans_extras(series.raw, series.borders["train"][1], cfg.data.seq_len, cfg.data.horizon,
                             cache_dir=cache_dir() / "orthotrans", data_sha256=series.sha256)


def build(cfg: RunConfig, progress: bool = True, series: Series | None = None) -> tuple[ForecastDataModule, ForecastModule]:
    """The DataModule and the LightningModule for ``cfg``, seeded."""
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    dm = ForecastDataModule(cfg.data, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.seed,
                            series=series, progress=progress, drop_last=cfg.train.drop_last,
                            shuffle=cfg.train.shuffle)
    ctx = ModelContext(cfg.data.seq_len, cfg.data.horizon, dm.n_vars, dm.n_marks, data_extras(cfg, dm.series))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)  # model init independent of data loading
    model = create_model(cfg.model_name, cfg.model, ctx)
    dm.shuffle_origin = torch.get_rng_state()  # train.shuffle=reference goes on from here, as the reference does
    return dm, ForecastModule(model, cfg.train, dm.series.mean, dm.series.std)


def run_name(cfg: RunConfig, series_name: str) -> str:
    return f"{cfg.model_name}_{series_name}_sl{cfg.data.seq_len}_pl{cfg.data.horizon}"


class RunRecorder(pl.Callback):
    """Creates the MLflow run when the Trainer sets up, on global rank 0 only, and ends it.

    Setup runs after Lightning's DDP launcher has started the other ranks (it runs the same command again in
    child processes, and torchrun or a second node run it too), so the rank is known for sure there: ranks
    other than 0 never create, log to or end a run. A guard process (forecast.runguard) ends the run FAILED if
    this process is killed before it can do so itself.
    """

    def __init__(self, uri: str, name: str, opts: TrainOptions, cfg: RunConfig, dm: ForecastDataModule,
                 n_params: int, epoch_logger: pl.Callback) -> None:
        self.uri, self.name, self.opts, self.cfg, self.dm, self.n_params = uri, name, opts, cfg, dm, n_params
        self.epoch_logger = epoch_logger
        self.mlf: Any = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.fit_started: float | None = None
        self._guard: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.run_id is None:
            self.start(trainer.world_size)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started = time.perf_counter()  # train_seconds leaves out the DDP launch and the run's creation

    def start(self, world_size: int = 1) -> None:
        from mlflow.entities import Param

        from forecast import runguard

        cfg, dm, opts = self.cfg, self.dm, self.opts
        self.mlf = mlf = tracking.client(self.uri)
        self.experiment_id = tracking.experiment_id(mlf, opts.experiment or dm.series.name, self.uri)
        tags = {**tracking.base_tags(dm.series.name, cfg.model_name, dm.series.sha256), **opts.tags,
                "mlflow.runName": self.name}
        if opts.parent_run_id:
            tags["mlflow.parentRunId"] = opts.parent_run_id
        self.run_id = mlf.create_run(self.experiment_id, run_name=self.name, tags=tags).info.run_id
        if not opts.parent_run_id:  # nested runs (trials) are guarded with their parent (forecast.tuning)
            self._guard = runguard.watch(self.uri, self.run_id)
        self.epoch_logger.mlf, self.epoch_logger.run_id = mlf, self.run_id
        params = tracking.params_of({**cfg.flat(), "data.n_vars": dm.n_vars, "data.n_marks": dm.n_marks,
                                     "data.freq": dm.series.freq, "model.n_params": self.n_params,
                                     "dist.world_size": world_size})
        mlf.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def end(self, status: str) -> None:
        """End the run (rank 0; a no-op elsewhere or before it exists), then release the guard."""
        try:
            if self.run_id is not None:
                self.mlf.set_terminated(self.run_id, status)
        finally:
            if self._guard is not None:
                self._guard.release()


def train(cfg: RunConfig, opts: TrainOptions | None = None, series: Series | None = None) -> TrainResult:
    """Fit, restore the best epoch's weights, test, and record everything in one MLflow run.

    Under DDP (``train.devices`` x ``train.num_nodes`` > 1) every rank runs this function; only global rank 0
    creates the run, logs and writes artifacts (the model once), and ends the run FAILED when anything fails.
    The other ranks return a result with ``is_global_zero=False`` and an empty ``run_id``.
    """
    opts = opts or TrainOptions()
    if opts.parent_run_id and (cfg.train.world_size > 1 or cfg.train.strategy == "ddp"):
        raise ForecastError("nested runs (tuning trials, benchmark cells) train in one process; run DDP with "
                            "`forecast train --devices N`.")
    uri = tracking.resolve_uri(opts.tracking_uri)
    tracking.quiet_logs()  # before the Trainer exists: no Lightning banner
    dm, module = build(cfg, progress=not opts.quiet, series=series)
    name = opts.run_name or run_name(cfg, dm.series.name)
    n_params = sum(p.numel() for p in module.model.parameters())
    epoch_logger = tracking.EpochLogger(None, "")
    run = RunRecorder(uri, name, opts, cfg, dm, n_params, epoch_logger)
    status = "FAILED"
    try:
        best = BestWeights()
        callbacks = [run, best, epoch_logger, *opts.callbacks]
        ckpt, resume = None, None
        if opts.checkpoint_dir is not None:
            if cfg.train.world_size > 1:
                raise ForecastError("resumable checkpoints need one process; train with --devices 1.")
            ckpt = EpochCheckpoint(opts.checkpoint_dir, on_resume=lambda history, epoch: _log_resumed(run, history, epoch))
            resume = ckpt.resume_path()
            if resume is not None:
                _check_checkpoint(resume, module)
            callbacks.append(ckpt)
        trainer = make_trainer(cfg.train, callbacks, quiet=opts.quiet)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
        train_seconds = ckpt.elapsed() if ckpt is not None else time.perf_counter() - (run.fit_started or t0)
        best.restore(module)
        metrics: dict[str, float] = {"best_val_loss": best.best, "best_epoch": float(best.best_epoch),
                                     "epochs_run": float(trainer.current_epoch), "train_seconds": train_seconds}
        if opts.evaluate_test:
            trainer.test(module, datamodule=dm, verbose=False)
            metrics.update(module.test_metrics)
        if run.run_id is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            run.mlf.log_batch(run.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            if opts.log_artifacts:
                _log_artifacts(run.mlf, run.run_id, cfg, dm, module, uri)
        status = "FINISHED"
        if ckpt is not None:
            ckpt.clear()
        return TrainResult(run.run_id or "", run.experiment_id or "", name, uri, best.best, best.best_epoch,
                           int(trainer.current_epoch), train_seconds, n_params, metrics, module.step_mse,
                           is_global_zero=bool(trainer.is_global_zero))
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        from optuna.exceptions import TrialPruned

        if isinstance(exc, TrialPruned):  # a tuning trial stopped early by its pruner: killed, not failed
            status = "KILLED"
        raise
    finally:
        run.end(status)


def _check_checkpoint(path: Path, module: ForecastModule) -> None:
    """A checkpoint to resume from must load safely and hold this model's weights; otherwise one clear line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        missing = set(module.state_dict()) ^ set(state["state_dict"])
    except Exception:  # noqa: BLE001 (any unreadable file: torch's own message names zip records)
        reason = "it is not a readable checkpoint (cut short or damaged)"
    else:
        if not missing:
            return
        reason = f"its weights do not match this model ({len(missing)} names differ)"
    raise ForecastError(f"cannot resume from {path}: {reason}; delete {path.parent} to start this run from scratch.")


def _log_resumed(run: RunRecorder, history: list[dict[str, float]], epoch: int) -> None:
    """A resumed fit's run gets the earlier processes' per-epoch metrics and says where it went on from."""
    if run.run_id is None:
        return
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(h["epoch"])) for h in history for k, v in h.items() if k != "epoch"]
    run.mlf.log_batch(run.run_id, metrics=metrics, tags=[RunTag("resumed_after_epoch", str(epoch + 1))])


def _log_artifacts(mlf, run_id: str, cfg: RunConfig, dm: ForecastDataModule, module: ForecastModule,
                   uri: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        state = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
        torch.save(state, out / "model_state.pt")
        scaler = {"columns": dm.series.columns, "mean": dm.series.mean.tolist(), "std": dm.series.std.tolist(),
                  "freq": dm.series.freq}
        (out / "scaler.json").write_text(json.dumps(scaler, indent=1))
        for key in ("q_in", "q_out"):
            if key in state or any(k.endswith(f".{key}") for k in state):
                q = next(v for k, v in state.items() if k.endswith(key))
                np.save(out / f"orthotrans_{key}.npy", q.numpy(), allow_pickle=False)
        if module.step_mse is not None:
            lines = ["step,mse"] + [f"{i + 1},{v:.6g}" for i, v in enumerate(module.step_mse)]
            (out / "step_mse.csv").write_text("\n".join(lines) + "\n")
            with contextlib.suppress(Exception):  # a plot is a nicety, never a failure
                _plot_forecasts(module, dm, out / "forecast.png")
        mlf.log_artifacts(run_id, str(out))
    _log_pyfunc(uri, run_id, cfg, dm, state)


def _log_pyfunc(uri: str, run_id: str, cfg: RunConfig, dm: ForecastDataModule, state: dict[str, torch.Tensor]) -> None:
    """The self-contained MLflow pyfunc model under ``model`` (see forecast.serving); the input example is the
    last L rows of the train split."""
    from forecast import serving

    s = dm.series
    meta = serving.model_meta(cfg.model_name, cfg.data.seq_len, cfg.data.horizon, s.columns, s.mean, s.std, s.freq,
                              dm.n_marks, cfg.data.mark_freq)
    end = s.borders["train"][1]
    serving.log_model(uri, run_id, meta, cfg.to_dict(), state, s.dates[end - cfg.data.seq_len:end],
                      s.raw[end - cfg.data.seq_len:end])


def _plot_forecasts(module: ForecastModule, dm: ForecastDataModule, path: Path, n_windows: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = dm.dataset("test")
    idx = np.linspace(0, len(ds) - 1, n_windows).astype(int).tolist()
    batch = ds[idx]
    module.eval()
    with torch.no_grad():
        device = next(module.parameters()).device
        pred = module.model(*(batch[k].to(device) if k in batch else None for k in ("x", "x_mark", "y_mark")))
    var = dm.n_vars - 1  # the last column: OT in the benchmarks
    fig, axes = plt.subplots(n_windows, 1, figsize=(9, 2.2 * n_windows), squeeze=False)
    L = batch["x"].shape[1]
    for ax, i in zip(axes[:, 0], range(n_windows)):
        ax.plot(range(L), batch["x"][i, :, var], color="0.5", lw=1, label="history")
        ax.plot(range(L, L + batch["y"].shape[1]), batch["y"][i, :, var], color="k", lw=1.2, label="actual")
        ax.plot(range(L, L + pred.shape[1]), pred[i, :, var].cpu(), color="tab:red", lw=1.2, label="forecast")
        ax.set_title(f"test window {idx[i]} · {dm.series.columns[var]} (standardized)", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
