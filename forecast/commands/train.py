"""``forecast train``: run it, then print what happened and where the results are."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from forecast import tracking
from forecast.benchmark.grid import config_hash
from forecast.config import RunConfig
from forecast.console import console, metric_table
from forecast.inference.serving import check_alias, register as register_model
from forecast.pipeline import TrainOptions, train as run_train
from forecast.process import sigterm_as_interrupt
from forecast.resolve import resolve
from forecast.train import saved_epochs


def checkpoint_dir(uri: str, cfg: RunConfig) -> Path:
    """Where ``forecast train`` keeps the resumable state of a run of ``cfg``: ``checkpoints/_train/<config hash>``
    beside a local store (``_`` keeps it apart from benchmark names), else under ``~/.cache/forecast``."""
    return tracking.checkpoint_root(uri) / "_train" / config_hash(cfg)


def train(dataset: str, model: str, overrides: dict, config: Path | None, tracking_uri: str | None,
          experiment: str | None, quiet: bool, register: str | None = None, alias: str = "champion",
          fresh: bool = False) -> None:
    """``forecast train``: resolve the config, train (going on from an interrupted run of the same config unless
    ``fresh``), register if asked, then print the test metrics and where the run is. Ctrl-C or SIGTERM ends the
    run KILLED, keeps its last finished epoch and exits 130."""
    cfg = resolve(model, dataset, overrides, config)
    if register is not None:
        check_alias(alias)  # before any training is spent
    uri = tracking.resolve_uri(tracking_uri)
    ckpt = checkpoint_dir(uri, cfg) if cfg.train.world_size == 1 else None  # one process resumes; DDP starts over
    if ckpt is not None and fresh:
        shutil.rmtree(ckpt, ignore_errors=True)
    done = saved_epochs(ckpt) if ckpt is not None else None
    if done and not quiet:
        print(f"resuming after epoch {done} from {ckpt} (--fresh starts over)", file=sys.stderr, flush=True)
    try:
        with sigterm_as_interrupt():
            result = run_train(cfg, TrainOptions(tracking_uri=uri, quiet=quiet, experiment=experiment,
                                                 checkpoint_dir=ckpt))
    except KeyboardInterrupt:
        done = saved_epochs(ckpt) if ckpt is not None else None
        after = (f"the same command goes on after epoch {done} (--fresh starts over)" if done else
                 "no epoch had finished, so the same command starts over")
        print(f"interrupted: the run is marked KILLED; {after}.", file=sys.stderr, flush=True)
        sys.exit(130)
    if ckpt is not None:
        with contextlib.suppress(OSError):
            ckpt.parent.rmdir()  # no empty _train/ left behind
        with contextlib.suppress(OSError):
            ckpt.parent.parent.rmdir()
    if not result.is_global_zero:  # another DDP rank: rank 0 records, registers and reports
        return
    version = None
    if register is not None:
        version = register_model(result.tracking_uri, result.run_id, register, alias)
    if quiet:
        return
    m = result.metrics
    table = metric_table([("test MSE", m["test_mse"], m["test_mse_orig"]),
                          ("test MAE", m["test_mae"], m["test_mae_orig"]),
                          *([("test MASE", m["test_mase"], "")] if "test_mase" in m else []),
                          ("best val loss", result.best_val_loss, "")],
                         title=f"{result.run_name}: {int(m.get('test_windows', 0)):,} test windows")
    out = console()
    out.print(table)
    if result.n_params:
        out.print(f"epochs {result.epochs_run} (best {result.best_epoch + 1}), {result.train_seconds:.1f} s, "
                  f"{result.n_params:,} parameters")
    else:
        out.print("a baseline with no parameters: nothing trained, validated and tested once")
    out.print(f"run id  {result.run_id}")
    out.print(f"store   {result.tracking_uri}")
    where = (f"{result.tracking_uri.rstrip('/')}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
             if result.tracking_uri.startswith(("http://", "https://"))
             else f"`forecast ui` then experiment '{experiment or dataset}'")
    out.print(f"open it {where}, "
              f"or predict with `forecast predict --model runs:/{result.run_id}/model --input history.csv`")
    if version is not None:
        out.print(f"model   registered as '{register}' version {version}, alias @{alias}: "
                  f"`forecast predict --model models:/{register}@{alias} --input history.csv`")
