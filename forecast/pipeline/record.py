"""What a training run records in MLflow: the run itself (created on global rank 0, per-epoch metrics, ended
with its status) and its outputs (files, a forecast plot and the pyfunc model)."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from forecast import artifact, runguard, tracking
from forecast.config import RunConfig
from forecast.data.datamodule import ForecastDataModule
from forecast.inference import serving
from forecast.models import placement, run_batch
from forecast.pipeline.options import TrainOptions
from forecast.train import ForecastModule, epoch_metrics
from forecast.conformal import artifact_intervals


class RunRecorder(pl.Callback):
    """Creates the MLflow run when the Trainer sets up, on global rank 0 only, logs every epoch, and ends it.

    Setup runs after Lightning's DDP launcher has started the other ranks (it runs the same command again in
    child processes, and torchrun or a second node run it too), so the rank is known for sure there: ranks
    other than 0 never create, log to or end a run. A guard process (forecast.runguard) ends the run FAILED if
    this process is killed before it can do so itself.
    """

    def __init__(self, uri: str, name: str, opts: TrainOptions, cfg: RunConfig, dm: ForecastDataModule,
                 n_params: int) -> None:
        self.uri, self.name, self.opts, self.cfg, self.dm, self.n_params = uri, name, opts, cfg, dm, n_params
        self.mlf: MlflowClient | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.fit_started: float | None = None
        self._guard: runguard.Guard | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.run_id is None:
            self.start(trainer.world_size)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_started = time.perf_counter()  # train_seconds leaves out the DDP launch and the run's creation

    def start(self, world_size: int = 1) -> None:
        cfg, dm, opts = self.cfg, self.dm, self.opts
        self.mlf = mlf = tracking.client(self.uri)
        self.experiment_id = tracking.experiment_id(mlf, opts.experiment or dm.series.name, self.uri)
        if not opts.parent_run_id:  # a nested run's parent (benchmark, tune) has closed them already
            runguard.close_orphans(mlf, self.experiment_id)
        tags = {**tracking.base_tags(dm.series.name, cfg.model_name, dm.series.sha256), **opts.tags,
                "mlflow.runName": self.name}
        if opts.parent_run_id:
            tags["mlflow.parentRunId"] = opts.parent_run_id
        self.run_id = mlf.create_run(self.experiment_id, run_name=self.name, tags=tags).info.run_id
        if not opts.parent_run_id:  # nested runs (trials) are guarded with their parent (forecast.tuning)
            self._guard = runguard.watch(self.uri, self.run_id)
        params = tracking.params_of({**cfg.flat(), "data.n_vars": dm.n_vars, "data.n_marks": dm.n_marks,
                                     "data.n_targets": dm.series.n_targets, "data.n_future": dm.series.n_future,
                                     **({"data.setting": cfg.data.setting} if cfg.data.setting else {}),
                                     "data.freq": dm.series.freq, "model.n_params": self.n_params,
                                     "dist.world_size": world_size})
        mlf.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """train_loss, val_loss and lr of the epoch, at step = epoch (rank 0 only)."""
        if self.run_id is None or trainer.sanity_checking:
            return
        now = int(time.time() * 1000)
        values = epoch_metrics(trainer)
        self.mlf.log_batch(self.run_id, metrics=[Metric(k, v, now, trainer.current_epoch) for k, v in values.items()])

    def resumed(self, history: list[dict[str, float]], epoch: int) -> None:
        """A resumed fit's run gets the earlier processes' per-epoch metrics and says where it went on from."""
        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(h["epoch"])) for h in history for k, v in h.items() if k != "epoch"]
        self.mlf.log_batch(self.run_id, metrics=metrics, tags=[RunTag("resumed_after_epoch", str(epoch + 1))])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        if self.run_id is not None:
            now = int(time.time() * 1000)
            self.mlf.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def end(self, status: str) -> None:
        """End the run (rank 0; a no-op elsewhere or before it exists), then release the guard."""
        runguard.end_run(self.mlf, self.run_id, status, self._guard)


def log_outputs(mlf: MlflowClient, run_id: str, cfg: RunConfig, dm: ForecastDataModule, module: ForecastModule,
                uri: str) -> None:
    """The run's files (config, weights, scaler, per-step MSE, a plot) and its pyfunc ``model``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        state = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
        torch.save(state, out / "model_state.pt")
        scaler = {"columns": dm.series.columns, "mean": dm.series.mean.tolist(), "std": dm.series.std.tolist(),
                  "freq": dm.series.freq}
        (out / "scaler.json").write_text(json.dumps(scaler, indent=1))
        if module.step_mse is not None:
            _write_steps(out / "step_mse.csv", {"mse": module.step_mse})
            with contextlib.suppress(Exception):  # a plot is a nicety, never a failure
                _plot_forecasts(module, dm, out / "forecast.png")
        if module.step_intervals:  # each conformal interval's test coverage and mean width, per horizon step
            _write_steps(out / "step_coverage.csv", module.step_intervals)
        mlf.log_artifacts(run_id, str(out))
    crps = None if module.crps_widths is None else module.crps_widths.numpy()
    intervals = None if module.intervals is None else artifact_intervals(module.intervals[0],
                                                                          module.intervals[1].numpy(), crps)
    _log_pyfunc(uri, run_id, cfg, dm, state, intervals)


def _write_steps(path: Path, columns: dict[str, np.ndarray]) -> None:
    """A ``step,<name>,...`` CSV of per-horizon-step values (1-based steps)."""
    lines = ["step," + ",".join(columns)]
    lines += [f"{i + 1}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(zip(*columns.values()))]
    path.write_text("\n".join(lines) + "\n")


def _log_pyfunc(uri: str, run_id: str, cfg: RunConfig, dm: ForecastDataModule, state: dict[str, torch.Tensor],
                intervals: tuple[tuple[float, ...], np.ndarray] | None) -> None:
    """The self-contained MLflow pyfunc model under ``model`` (see forecast.inference.serving); the input example
    is the last L rows of the train split."""
    s = dm.series
    meta = artifact.model_meta(cfg.model_name, cfg.data.seq_len, cfg.data.horizon, s.columns, s.mean, s.std, s.freq,
                              dm.n_marks, cfg.data.mark_freq, s.roles, 0 if s.calendar is None else s.calendar.shape[1])
    end = s.borders["train"][1]
    serving.log_model(uri, run_id, meta, cfg.to_dict(), state, s.dates[end - cfg.data.seq_len:end],
                      s.raw[end - cfg.data.seq_len:end], intervals)


def _plot_forecasts(module: ForecastModule, dm: ForecastDataModule, path: Path, n_windows: int = 4) -> None:
    import matplotlib  # only here: a few hundred ms that predict and tuning trials never pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = dm.dataset("test")
    idx = np.linspace(0, len(ds) - 1, n_windows).astype(int).tolist()
    batch = ds[idx]
    module.eval()
    with torch.no_grad():
        pred = module.point(run_batch(module.model, batch, *placement(module.model)))
    var = dm.series.n_targets - 1  # the last target: OT in the benchmarks
    fig, axes = plt.subplots(n_windows, 1, figsize=(9, 2.2 * n_windows), squeeze=False)
    L = batch["x"].shape[1]
    for ax, i in zip(axes[:, 0], range(n_windows)):
        ax.plot(range(L), batch["x"][i, :, var], color="0.5", lw=1, label="history")
        ax.plot(range(L, L + batch["y"].shape[1]), batch["y"][i, :, var], color="k", lw=1.2, label="actual")
        steps = range(L, L + pred.shape[1])
        if module.intervals is not None:  # a fan chart: the conformal bands, widest first
            for level, widths in sorted(zip(*module.intervals), key=lambda lw: -lw[0]):
                w = widths[:, var].cpu()
                ax.fill_between(steps, pred[i, :, var].cpu() - w, pred[i, :, var].cpu() + w, color="tab:red",
                                alpha=0.12 if level > 0.85 else 0.22, lw=0, label=f"{level:.0%} interval")
        ax.plot(steps, pred[i, :, var].cpu(), color="tab:red", lw=1.2, label="forecast")
        ax.set_title(f"test window {idx[i]} · {dm.series.columns[var]} (standardized)", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.04, top=0.97, hspace=0.35)  # fixed: tight_layout is 0.1 s
    fig.savefig(path, dpi=80)
    plt.close(fig)
