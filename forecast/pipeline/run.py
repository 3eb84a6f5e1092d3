"""The one training path: data -> model -> Lightning fit -> best weights -> test -> MLflow records.

``forecast train``, tuning trials and benchmark cells all call :func:`train`.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
import torch

from forecast import tracking
from forecast.config import RunConfig
from forecast.data.datamodule import ForecastDataModule
from forecast.data.orthobasis import data_extras
from forecast.data.series import Series, load_series
from forecast.errors import DivergedError, ForecastError
from forecast.models import ModelContext, create_model, extras_from_state, get_spec
from forecast.pipeline.finetune import Parent, adapt_series, check_network, parent_val_loss, weights_do_not_fit
from forecast.pipeline.options import TrainOptions, TrainResult
from forecast.pipeline.record import RunRecorder, log_outputs
from forecast.process import resume_gc
from forecast.train import BestWeights, EpochCheckpoint, ForecastModule, check_precision, make_trainer
from forecast.conformal import calibrate


def build(cfg: RunConfig, progress: bool = True, series: Series | None = None,
          parent: Parent | None = None) -> tuple[ForecastDataModule, ForecastModule]:
    """The DataModule and the LightningModule for ``cfg``, seeded; ``parent``: the model fine-tuning starts from,
    whose weights and bases are loaded strictly instead of the fresh ones."""
    init_state = parent.state if parent is not None else None
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    dm = ForecastDataModule(cfg.data, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.seed,
                            series=series, progress=progress, drop_last=cfg.train.drop_last,
                            shuffle=cfg.train.shuffle)
    needs = get_spec(cfg.model_name).extras(cfg.model)  # data-derived tensors, from the train split only
    extras = (extras_from_state(needs, init_state) if init_state is not None
              else data_extras(needs, dm.series, cfg.data.seq_len, cfg.data.horizon))
    s = dm.series
    ctx = ModelContext(seq_len=cfg.data.seq_len, horizon=cfg.data.horizon, n_vars=dm.n_vars, n_marks=dm.n_marks,
                       n_targets=s.n_targets, n_future=s.n_future, univariate=s.roles.univariate, extras=extras)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)  # model init independent of data loading
    model = create_model(cfg.model_name, cfg.model, ctx, cfg.train.model_quantiles)
    if parent is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError:  # shapes or keys: a model key that reshapes the network (check_network has the rest)
            raise weights_do_not_fit(parent, cfg) from None
    dm.shuffle_origin = torch.get_rng_state()  # train.shuffle=reference goes on from here, as the reference does
    n_t = s.n_targets  # metrics are the targets' alone
    return dm, ForecastModule(model, cfg.train, s.mean[:n_t], s.std[:n_t], s.mase_scale())


# The most one validation pass's point forecasts may take to be kept for calibration (two passes' are held at once:
# the best epoch's and the running one's); beyond it calibration makes its own pass.
KEEP_VAL_FORECASTS_BYTES = 512 * 2**20


def val_forecast_bytes(cfg: RunConfig, dm) -> int:  # noqa: ANN001
    """The memory a validation pass's kept point forecasts take (float32, the targets only)."""
    return len(dm.dataset("val")) * cfg.data.horizon * dm.series.n_targets * 4


def diverged(cfg: RunConfig, epochs: int) -> str:
    """What to do about a run whose validation loss was never finite (:class:`DivergedError`)."""
    t = cfg.train
    fix = f"lower the learning rate (train.lr is {t.lr:g})"
    if t.precision != "32-true":
        fix += f" or train at 32-true or bf16-mixed (train.precision is {t.precision})"
    return (f"training diverged: the validation loss was not a finite number after {epochs} epoch"
            f"{'s' if epochs != 1 else ''}, so there are no weights to keep; {fix}.")


def run_name(cfg: RunConfig, series_name: str) -> str:
    """``dlinear_ETTh1_sl336_pl96``, then ``_S`` or ``_MS`` when not every column is forecast from every column."""
    d = cfg.data
    return f"{cfg.model_name}_{series_name}_sl{d.seq_len}_pl{d.horizon}" + (f"_{d.features}" if d.setting else "")


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
    parent = opts.init
    if parent is not None:  # fine-tuning: the parent's network, columns, order and scaler; its weights and bases
        check_network(parent, cfg)
        series = adapt_series(series or load_series(cfg.data, progress=not opts.quiet), parent, opts.refit_scaler)
    dm, module = build(cfg, progress=not opts.quiet, series=series, parent=parent)
    dm.check_train_batches(cfg.train.world_size)  # before a run exists: a config error leaves no FAILED run
    check_precision(cfg.train)
    name = opts.run_name or run_name(cfg, dm.series.name)
    n_params = sum(p.numel() for p in module.model.parameters())
    module.keep_val_forecasts = cfg.train.world_size == 1 and val_forecast_bytes(cfg, dm) <= KEEP_VAL_FORECASTS_BYTES
    run = RunRecorder(uri, name, opts, cfg, dm, n_params)
    status = "FAILED"
    try:
        best = BestWeights()
        callbacks = [run, best, *opts.callbacks]
        ckpt, resume = None, None
        if opts.checkpoint_dir is not None:
            if cfg.train.world_size > 1:
                raise ForecastError("resumable checkpoints need one process; train with --devices 1.")
            ckpt = EpochCheckpoint(opts.checkpoint_dir, on_resume=run.resumed)
            resume = ckpt.resume_path()
            if resume is not None:
                _check_checkpoint(resume, module)
            callbacks.append(ckpt)
        try:
            trainer = make_trainer(cfg.train, callbacks, quiet=opts.quiet)
        except MisconfigurationException as err:  # e.g. --accelerator gpu on a machine without one
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ForecastError(f"train.accelerator '{cfg.train.accelerator}' / train.devices {cfg.train.devices}: "
                                f"{first} Use --accelerator auto (a GPU when there is one, else the CPU) or cpu."
                                ) from None
        if parent is not None:  # the parent on this run's validation windows, before any step changes the weights
            parent_loss = parent_val_loss(parent, dm.dataset("val"), dm.series.mean, dm.series.std, module.loss_fn)
        resume_gc()  # start-up is over: the store is open, the data and the model built (forecast.process)
        t0 = time.perf_counter()
        if n_params:
            trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
            train_seconds = ckpt.elapsed() if ckpt is not None else time.perf_counter() - (run.fit_started or t0)
            best.restore(module)
            if best.state is None:  # no epoch's val_loss was a finite number (early stopping ends at the first)
                if ckpt is not None:  # nothing worth resuming from: the same command would diverge again
                    ckpt.clear()
                raise DivergedError(diverged(cfg, trainer.current_epoch))
        else:  # a baseline with nothing to learn (naive, seasonal_naive): validated once, never fitted
            trainer.validate(module, datamodule=dm, verbose=False)  # BestWeights records its val_loss
            train_seconds = 0.0
        metrics: dict[str, float] = {"best_val_loss": best.best, "best_epoch": float(best.best_epoch),
                                     "epochs_run": float(trainer.current_epoch), "train_seconds": train_seconds}
        if parent is not None:
            metrics["parent_val_loss"] = parent_loss
        # Split conformal on the best weights' validation residuals: the intervals asked for, and those whose edges
        # are the nine quantiles of the test CRPS. From the best epoch's own validation forecasts when the run kept
        # them for every window, else from one more pass.
        val = dm.dataset("val")
        kept = best.forecasts if best.forecasts and sum(map(len, best.forecasts)) == len(val) else None
        best.forecasts = module.val_forecasts = None
        widths, crps_widths = calibrate(module.model, val, cfg.train.eval_batch_size, module.point,
                                        cfg.train.intervals, forecasts=kept)
        del kept  # not held through the test pass
        metrics["val_windows"] = float(len(val))  # how many residuals each half-width was chosen from
        if cfg.train.intervals:
            module.intervals = (cfg.train.intervals, torch.from_numpy(widths))
        module.crps_widths = torch.from_numpy(crps_widths)
        if opts.evaluate_test and cfg.train.published_drop_last and cfg.train.world_size == 1:  # the papers' subset
            n_test, batch = len(dm.dataset("test")), cfg.train.batch_size
            module.published_windows = n_test // batch * batch
        if opts.evaluate_test:
            trainer.test(module, datamodule=dm, verbose=False)
            metrics.update(module.test_metrics)
        run.log_metrics(metrics)
        if run.run_id is not None and opts.log_artifacts:
            log_outputs(run.mlf, run.run_id, cfg, dm, module, uri)
        status = "FINISHED"
        if ckpt is not None:
            ckpt.clear()
        return TrainResult(run.run_id or "", run.experiment_id or "", name, uri, best.best, best.best_epoch,
                           int(trainer.current_epoch), train_seconds, n_params, metrics, module.step_mse,
                           is_global_zero=bool(trainer.is_global_zero),
                           setting="" if dm.series.roles.is_default else dm.series.roles.describe(),
                           experiment=opts.experiment or dm.series.name)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exc:
        # Lightning turns a Ctrl-C (or a SIGTERM, see sigterm_as_interrupt) inside fit into sys.exit(1) after it
        # has set SIGINT to be ignored: restore Ctrl-C, end the run KILLED and hand the interrupt back, so every
        # caller (train, a tuning trial, a benchmark cell) sees a KeyboardInterrupt.
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        status = "KILLED"
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from None
    except opts.stopped_by:  # e.g. a tuning trial stopped early by its pruner: killed, not failed
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
