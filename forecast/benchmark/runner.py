"""Running the grid: each pending cell through the training path, resumable, one MLflow parent run."""

from __future__ import annotations

import time

from mlflow.entities import Metric, Param

from forecast import runguard, tracking
from forecast.data.catalogue import dataset_name
from forecast.benchmark.grid import BenchmarkOptions, Cell, plan
from forecast.benchmark.progress import GridProgress
from forecast.benchmark.results import BenchmarkResult, aggregate_cells
from forecast.benchmark.store import (
    cell_checkpoint_dir,
    finished_runs,
    log_tables,
    n_params,
    their_settings,
    version_tags,
)
from forecast.pipeline import TrainOptions, run_name, train
from forecast.process import owner, sigterm_as_interrupt
from forecast.published import load_published
from forecast.train import EpochPrinter, prune_checkpoint_folders, saved_epochs


def _run_cell(cell: Cell, uri: str, experiment: str, parent_id: str, name: str,
              progress: GridProgress | None = None) -> None:
    rname = f"{run_name(cell.cfg, dataset_name(cell.dataset))}_s{cell.seed}"  # e.g. dlinear_ETTh1_sl336_pl96_s2021
    epochs = [] if progress is None else [
        EpochPrinter(emit=lambda line: progress.epoch(cell, line), step_every=progress.step_every,
                     step_emit=lambda info: progress.step(cell, info))]
    opts = TrainOptions(tracking_uri=uri, quiet=True, experiment=experiment, run_name=rname,
                        parent_run_id=parent_id, callbacks=epochs,
                        checkpoint_dir=cell_checkpoint_dir(uri, name, cell.config_hash),
                        tags={"benchmark": name, "benchmark_role": "cell", "config_hash": cell.config_hash})
    t0 = time.perf_counter()
    try:
        res = train(cell.cfg, opts)
    except KeyboardInterrupt:  # the pipeline has ended the cell's run KILLED
        cell.seconds = time.perf_counter() - t0
        raise
    except Exception as err:  # one broken cell does not stop the grid; its run is FAILED
        cell.status, cell.error = "failed", (str(err).splitlines() or [type(err).__name__])[0][:400]
    else:
        cell.status, cell.run_id, cell.experiment_id = "done", res.run_id, res.experiment_id
        cell.metrics, cell.n_params = dict(res.metrics), res.n_params
        prune_checkpoint_folders(opts.checkpoint_dir)
    cell.seconds = time.perf_counter() - t0


def run(opts: BenchmarkOptions) -> BenchmarkResult:
    """Run (or resume) the grid; returns every cell with its outcome and the aggregated rows."""
    t0 = time.perf_counter()
    cells = plan(opts)
    published = load_published()
    uri = tracking.resolve_uri(opts.tracking_uri)
    mlf = tracking.client(uri)
    experiment = opts.experiment or f"benchmark-{opts.name}"
    exp_id = tracking.experiment_id(mlf, experiment, uri)
    runguard.close_orphans(mlf, exp_id)  # what a predecessor killed with its guard left RUNNING
    done = finished_runs(mlf, opts.name)
    for cell in cells:
        prev = done.get(cell.config_hash)
        if prev is not None:
            cell.status, cell.run_id, cell.experiment_id = "skipped", prev.info.run_id, prev.info.experiment_id
            cell.metrics, cell.n_params = dict(prev.data.metrics), n_params(prev.data.params)
        else:
            cell.saved_epochs = saved_epochs(cell_checkpoint_dir(uri, opts.name, cell.config_hash))
    tags = {**version_tags(), "benchmark": opts.name, "benchmark_role": "parent", tracking.OWNER_TAG: owner(),
            "mlflow.runName": f"benchmark_{opts.name}"}
    parent = mlf.create_run(exp_id, run_name=f"benchmark_{opts.name}", tags=tags)
    parent_id = parent.info.run_id
    guard = runguard.watch(uri, parent_id)  # kill -9: the parent and its running cell end FAILED, not RUNNING
    status, interrupted = "FAILED", False
    try:
        params = {"benchmark.name": opts.name, "benchmark.models": ",".join(dict.fromkeys(c.model for c in cells)),
                  "benchmark.datasets": ",".join(dict.fromkeys(c.dataset for c in cells)),
                  "benchmark.horizons": ",".join(map(str, dict.fromkeys(c.horizon for c in cells))),
                  "benchmark.seeds": ",".join(str(s) for s in dict.fromkeys(c.seed for c in cells)),
                  "benchmark.cells": len(cells),
                  **{f"set.{k}": v for k, v in opts.overrides.items()}}
        mlf.log_batch(parent_id, params=[Param(k, v) for k, v in tracking.params_of(params).items()])
        with sigterm_as_interrupt(), GridProgress(cells, opts.quiet or opts.collect) as progress:
            progress.skipped([c for c in cells if c.status == "skipped"])
            for cell in cells:
                if cell.status != "pending" or opts.collect:
                    continue
                progress.start(cell, cell.saved_epochs)
                try:
                    _run_cell(cell, uri, experiment, parent_id, opts.name, progress)
                except KeyboardInterrupt:
                    interrupted = True
                    break
                progress.finish(cell)
        rows = aggregate_cells(cells, published)
        wall = time.perf_counter() - t0
        now = int(time.time() * 1000)
        counts = {"cells_total": len(cells), "cells_run": sum(c.status in ("done", "failed") for c in cells),
                  "cells_skipped": sum(c.status == "skipped" for c in cells),
                  "cells_failed": sum(c.status == "failed" for c in cells), "wall_seconds": wall}
        mlf.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in counts.items()])
        log_tables(mlf, parent_id, rows)
        status = "KILLED" if interrupted else "FINISHED"
        planned = {c.config_hash for c in cells}
        others = [run for key, run in done.items() if key not in planned]
        return BenchmarkResult(opts.name, experiment, exp_id, parent_id, uri, cells, rows, wall, interrupted,
                               collected=opts.collect, other_settings=len(others),
                               their_settings=tuple(their_settings(mlf, others)) if opts.collect and others else ())
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        runguard.end_run(mlf, parent_id, status, guard)
