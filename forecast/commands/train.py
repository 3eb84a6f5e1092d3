"""``forecast train``: run it, then print what happened and where the results are."""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path

from forecast import tracking
from forecast.benchmark.grid import config_hash
from forecast.commands.flags import DEFAULT_MODEL
from forecast.config import RunConfig, digest
from forecast.conformal import crps_rows, min_windows
from forecast.console import console, metric_table
from forecast.errors import ForecastError
from forecast.inference.serving import check_alias, register as register_model
from forecast.pipeline import TrainOptions, train as run_train
from forecast.pipeline.finetune import inherited, load_parent
from forecast.process import sigterm_as_interrupt
from forecast.resolve import resolve
from forecast.train import prune_checkpoint_folders, saved_epochs


def checkpoint_dir(uri: str, cfg: RunConfig, init_from: str | None = None) -> Path:
    """Where ``forecast train`` keeps the resumable state of a run of ``cfg``: ``checkpoints/_train/<config hash>``
    beside a local store (``_`` keeps it apart from benchmark names), else under ``~/.cache/forecast``; a
    fine-tuning run's folder also names its parent."""
    key = config_hash(cfg) + (f"-from-{digest(init_from)}" if init_from else "")
    return tracking.checkpoint_root(uri) / "_train" / key


def train(dataset: str, model: str | None, overrides: dict, config: Path | None, tracking_uri: str | None,
          experiment: str | None, quiet: bool, register: str | None = None, alias: str = "champion",
          fresh: bool = False, init_from: str | None = None, refit_scaler: bool = False, force: bool = False) -> None:
    """``forecast train``: resolve the config, train (going on from an interrupted run of the same config unless
    ``fresh``; from a logged model's weights with ``init_from``), register if asked (a fine-tuned model only when
    it beats its parent on the same validation windows, or ``force``), then print the test metrics and where the
    run is. Ctrl-C or SIGTERM ends the run KILLED, keeps its last finished epoch and exits 130."""
    parent = None
    tags: dict[str, str] = {}
    if init_from is not None:
        parent = load_parent(init_from, tracking_uri)
        if model is not None and model.lower() != parent.model.meta.model_name:
            raise ForecastError(f"--model {model} is not the model of --init-from {init_from} "
                                f"({parent.model.meta.model_name}); fine-tuning goes on with the parent's network, "
                                f"so leave --model out, or train {model} afresh without --init-from.")
        model = parent.model.meta.model_name  # the parent's model, config and bases; flags and --set on top
        overrides = {**inherited(parent), **overrides}
        tags = {"init_from": init_from, "mlflow.note.content":
                f"Fine-tuned from {init_from}" + (f" (run {parent.run_id})" if parent.run_id else "") +
                f" on {dataset}; scaler {'refit on the new train split' if refit_scaler else 'kept'}."}
        if parent.run_id:
            tags["parent_model_run_id"] = parent.run_id
    cfg = resolve(model or DEFAULT_MODEL, dataset, overrides, config)
    if register is not None:
        check_alias(alias)  # before any training is spent
    uri = tracking.resolve_uri(tracking_uri)
    ckpt = checkpoint_dir(uri, cfg, init_from) if cfg.train.world_size == 1 else None  # one process resumes
    if ckpt is not None and fresh:
        shutil.rmtree(ckpt, ignore_errors=True)
    done = saved_epochs(ckpt) if ckpt is not None else None
    if done and not quiet:
        print(f"resuming after epoch {done} from {ckpt} (--fresh starts over)", file=sys.stderr, flush=True)
    try:
        with sigterm_as_interrupt():
            result = run_train(cfg, TrainOptions(tracking_uri=uri, quiet=quiet, experiment=experiment, tags=tags,
                                                 init=parent, refit_scaler=refit_scaler,
                                                 checkpoint_dir=ckpt))
    except KeyboardInterrupt:
        done = saved_epochs(ckpt) if ckpt is not None else None
        after = (f"the same command goes on after epoch {done} (--fresh starts over)" if done else
                 "no epoch had finished, so the same command starts over")
        print(f"interrupted: the run is marked KILLED; {after}.", file=sys.stderr, flush=True)
        sys.exit(130)
    finally:  # no empty _train/ left behind
        if ckpt is not None:
            prune_checkpoint_folders(ckpt)
    if not result.is_global_zero:  # another DDP rank: rank 0 records, registers and reports
        return
    version = None
    verdict = None
    if parent is not None:
        new, old = result.best_val_loss, result.metrics["parent_val_loss"]
        better = new < old
        verdict = (f"val loss on the same validation windows: {new:.4f} fine-tuned against {old:.4f} for the parent "
                   f"({init_from}): " + ("better" if better else "not better"))
        if register is not None and not (better or force):
            verdict += f"; not registered as {register}@{alias} (--force registers it anyway)"
            register = None
    if register is not None:
        version = register_model(result.tracking_uri, result.run_id, register, alias)
    if quiet:
        if verdict is not None and "not registered" in verdict:
            print(verdict, file=sys.stderr)
        return
    m = result.metrics
    table = metric_table(summary_rows(m, result.best_val_loss),
                         title=f"{result.run_name}: {int(m.get('test_windows', 0)):,} test windows")
    out = console()
    out.print(table)
    unbounded = unbounded_intervals(m)
    if unbounded:
        out.print(unbounded)
    if result.setting:
        out.print(f"setting {result.setting} (metrics on the targets)")
    if result.n_params:
        out.print(f"epochs {result.epochs_run} (best {result.best_epoch + 1}), {result.train_seconds:.1f} s, "
                  f"{result.n_params:,} parameters")
    else:
        out.print("a baseline with no parameters: nothing trained, validated and tested once")
    out.print(f"run id  {result.run_id}")
    out.print(f"store   {result.tracking_uri}")
    where = (f"{result.tracking_uri.rstrip('/')}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
             if result.tracking_uri.startswith(("http://", "https://"))
             else f"`forecast ui` then experiment '{result.experiment}'")
    out.print(f"open it {where}, "
              f"or predict with `forecast predict --model runs:/{result.run_id}/model --input history.csv`")
    if verdict is not None:
        out.print(verdict)
    if version is not None:
        out.print(f"model   registered as '{register}' version {version}, alias @{alias}: "
                  f"`forecast predict --model models:/{register}@{alias} --input history.csv`")


def unbounded_intervals(m: dict[str, float]) -> str | None:
    """A line on the intervals that too few validation windows left unbounded (infinite width, coverage 1; CRPS,
    read from the 20-80% intervals, is then not a number), and how to bound them."""
    levels = sorted((k.removeprefix("test_width_") for k in m if re.fullmatch(r"test_width_[\d.]+", k)), key=float)
    wide = [f"{lv}%" for lv in levels if not math.isfinite(m[f"test_width_{lv}"])]
    crps = "test_crps" in m and not math.isfinite(m["test_crps"])
    if not (wide or crps) or "val_windows" not in m:
        return None
    what = f"unbounded {', '.join(wide)} interval{'s' * (len(wide) > 1)}" if wide else "CRPS not a number"
    need = ", ".join(f"{min_windows(float(w[:-1]) / 100)} for {w}" for w in wide or ["80%"])
    return (f"{what}: {int(m['val_windows'])} validation windows, where split conformal needs {need}"
            f"{' (CRPS, read from the 20-80% intervals, is not a number)' if crps and wide else ''}; give validation "
            "more rows (--split) or forecast fewer steps (--horizon).")


def summary_rows(m: dict[str, float], best_val_loss: float) -> list[tuple[str, object, object]]:
    """The finished run's table: the point metrics, then what its quantiles or intervals achieved on the test
    windows (CRPS, and each interval's coverage against its nominal level and its mean width)."""
    rows: list[tuple[str, object, object]] = [("test MSE", m["test_mse"], m["test_mse_orig"]),
                                              ("test MAE", m["test_mae"], m["test_mae_orig"])]
    if "test_mse_published" in m:  # over the windows the official code scored (train.published_drop_last)
        n = f"{int(m['test_windows_published']):,} windows"
        rows += [(f"test MSE as published ({n})", m["test_mse_published"], ""),
                 ("test MAE as published", m["test_mae_published"], "")]
    if "test_mase" in m:
        rows.append(("test MASE", m["test_mase"], ""))
    rows += crps_rows(m, "test_", "test ")  # a nine-level quantile model's own, then its intervals'
    if "test_pinball" in m:
        rows.append(("test pinball loss", m["test_pinball"], ""))
    levels = sorted((k.removeprefix("test_coverage_") for k in m if k.startswith("test_coverage_")), key=float)
    for name in levels:
        rows.append((f"{name}% interval: coverage", m[f"test_coverage_{name}"], ""))
        rows.append((f"{name}% interval: mean width", m[f"test_width_{name}"], m.get(f"test_width_{name}_orig", "")))
    rows.append(("best val loss", best_val_loss, ""))
    return rows
