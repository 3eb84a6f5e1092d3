"""``forecast benchmark``: a grid of models x datasets x horizons x seeds, resumable, recorded in MLflow.

Every cell trains through :func:`forecast.pipeline.train` (the path of ``forecast train``) with the defaults from
configs/ for its dataset and horizon, plus the grid's ``--set`` overrides. MLflow gets one parent run per
invocation (tag ``benchmark_role=parent``) and one nested run per cell (``benchmark_role=cell``), all in the
experiment ``benchmark-<name>`` and tagged ``benchmark=<name>`` and ``config_hash=<hash>``.

**Config hash.** The sha256 (first 16 hex digits) of the fully resolved config (``RunConfig.to_dict()``: model
name, every ``data.*``, ``model.*`` and ``train.*`` value, the seed included), leaving out only what says where
the data is read from and how (``data.data_dir``, ``data.num_workers``), which does not change the numbers, and
``data.mark_freq`` while unset, ``train.drop_last`` while false and ``train.shuffle`` while ``seed`` (those keys
are newer than the first recorded cells).

**Resume.** Before training, the cells whose hash already has a FINISHED run with test metrics under the same
benchmark name (in any experiment of the store) are skipped and their recorded metrics reused. A Ctrl-C or
SIGTERM ends the running cell's run as KILLED (an exception in a cell: FAILED) and the parent as KILLED, so
the same command later runs only the cells left. Within a cell, the training state is saved after every epoch
(``checkpoints/<name>/<hash>/`` beside a local sqlite store, see :func:`forecast.tracking.checkpoint_root`), so
an interrupted cell goes on from its last finished epoch, with the same result as an uninterrupted run, in a
new run tagged ``resumed_after_epoch``. The directory is removed when the cell finishes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import re
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from forecast.config import RunConfig, resolve
from forecast.errors import ForecastError
from forecast.published import Published, load_published, lookup

HASH_EXCLUDE = {"data": ("data_dir", "num_workers")}
# Keys added after cells were recorded, with their defaults: left out while at the default, so the earlier cells
# keep their hashes.
HASH_DEFAULT_OMITTED = {("data", "mark_freq"): None, ("train", "drop_last"): False, ("train", "shuffle"): "seed"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# -- options and the grid -------------------------------------------------------------------------------------------
@dataclass
class BenchmarkOptions:
    """What ``forecast benchmark`` was asked: the grid, its name, overrides for every cell and where runs go."""

    models: list[str]
    datasets: list[str]
    horizons: list[int]
    seeds: list[int] | None = None  # None: the seed in configs/ (train.seed, 2021 by default)
    name: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment: str | None = None  # default: benchmark-<name>
    quiet: bool = False
    markdown: Path | None = None  # also write the result table here, with the command and wall time
    collect: bool = False  # train nothing: the table of the cells finished so far; the others stay pending


@dataclass
class Cell:
    """One (model, dataset, horizon, seed) of the grid, its resolved config and, once known, its outcome."""

    model: str
    dataset: str
    horizon: int
    seed: int
    cfg: RunConfig
    config_hash: str
    status: str = "pending"  # pending | skipped (finished earlier) | done | failed
    run_id: str | None = None
    experiment_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    n_params: int | None = None
    seconds: float = 0.0  # wall time of this cell in this invocation
    error: str | None = None
    saved_epochs: int | None = None  # a pending cell with a resumable checkpoint: the epochs it holds

    @property
    def label(self) -> str:
        return f"{self.model} {self.dataset} H={self.horizon} seed {self.seed}"

    @property
    def pending_label(self) -> str:
        """The label of a cell not run yet, with how far an interrupted earlier run of it got."""
        return self.label + (f" (checkpoint after epoch {self.saved_epochs})" if self.saved_epochs else "")


@dataclass
class Row:
    """One aggregated result: a (dataset, horizon, model, lookback) over its seeds, with the published number."""

    dataset: str
    horizon: int
    model: str
    lookback: int
    n: int
    mse: float
    mse_std: float
    mae: float
    mae_std: float
    train_seconds: float
    n_params: int | None
    run_ids: list[str]
    experiment_ids: list[str | None]  # of each run in run_ids
    published: Published | None

    @property
    def delta_mse(self) -> float:
        return self.mse - self.published.mse if self.published else math.nan

    @property
    def delta_mae(self) -> float:
        return self.mae - self.published.mae if self.published else math.nan


@dataclass
class BenchmarkResult:
    name: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    cells: list[Cell]
    rows: list[Row]
    wall_seconds: float
    interrupted: bool = False
    collected: bool = False  # --collect: nothing was trained; pending cells were left for later

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "pending"]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)


def parse_list(text: str, what: str, as_int: bool = False) -> list[Any]:
    """``"96,192"`` -> ``[96, 192]``; empty items are dropped, duplicates removed (order kept)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ForecastError(f"--{what} needs at least one value, e.g. --{what} {'96,192' if as_int else 'x,y'}.")
    if as_int:
        try:
            items = [int(t) for t in items]
        except ValueError:
            raise ForecastError(f"--{what} takes integers separated by commas, got '{text}'.") from None
        if any(v < 1 for v in items) and what == "horizons":
            raise ForecastError(f"--horizons must be positive integers, got '{text}'.")
    return list(dict.fromkeys(items))


def config_hash(cfg: RunConfig) -> str:
    """The cell's identity for resuming: see the module docstring for what it covers."""
    doc = cfg.to_dict()
    for section, keys in HASH_EXCLUDE.items():
        for k in keys:
            doc[section].pop(k, None)
    for (section, key), default in HASH_DEFAULT_OMITTED.items():
        if doc[section].get(key, default) == default:
            doc[section].pop(key, None)
    blob = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_dataset(name: str) -> str:
    """A benchmark name (canonical spelling) or an existing file path; otherwise a ForecastError."""
    if Path(name).suffix and Path(name).exists():
        return name
    from forecast.data.catalogue import lookup as catalogue_lookup

    return catalogue_lookup(name).name


def plan(opts: BenchmarkOptions) -> list[Cell]:
    """Validate every name and override up front and resolve every cell's config (nothing is trained)."""
    from forecast.models import get_spec

    if not NAME_RE.match(opts.name):
        raise ForecastError(f"--name '{opts.name}' must be letters, digits, '.', '_' or '-' (at most 100).")
    models = list(dict.fromkeys(get_spec(m).name for m in opts.models))
    datasets = list(dict.fromkeys(_check_dataset(d) for d in opts.datasets))
    overrides = dict(opts.overrides)
    for fixed in ("data.horizon", "train.seed", "data.dataset"):
        if fixed in overrides:
            raise ForecastError(f"--set {fixed} is set by the grid; use --horizons/--seeds/--datasets instead.")
    cells: list[Cell] = []
    for dataset in datasets:
        for horizon in opts.horizons:
            for model in models:
                for seed in (opts.seeds or [None]):
                    extra = {"data.horizon": horizon, **({"train.seed": seed} if seed is not None else {})}
                    cfg = resolve(model, dataset, {**overrides, **extra})
                    cells.append(Cell(model, dataset, horizon, cfg.train.seed, cfg, config_hash(cfg)))
    return cells


# -- MLflow ---------------------------------------------------------------------------------------------------------
def finished_runs(mlf, name: str) -> dict[str, Any]:  # noqa: ANN001
    """``{config_hash: run}`` of the FINISHED cell runs with test metrics of benchmark ``name`` (newest wins)."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    if not exp_ids:
        return {}
    runs = mlf.search_runs(exp_ids, filter_string=f"tags.benchmark = '{name}' and attributes.status = 'FINISHED' "
                                                  "and tags.benchmark_role = 'cell'",
                           max_results=50000, order_by=["attributes.start_time ASC"])
    return {r.data.tags["config_hash"]: r for r in runs if "config_hash" in r.data.tags and "test_mse" in r.data.metrics}


def _n_params(params: dict[str, str]) -> int | None:
    with contextlib.suppress(KeyError, ValueError):
        return int(params["model.n_params"])
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the grid runs, SIGTERM behaves like Ctrl-C, so the running cell's run ends KILLED, not RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# -- progress -------------------------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class GridProgress:
    """Cells done and left with an ETA: a rich bar on a terminal, one line per cell otherwise, or nothing.

    The ETA is the mean wall time of the cells run so far in this invocation times the cells left. Within the
    running cell: its epochs and, every ``step_every`` seconds, the step, the rate and the time left at most.
    """

    def __init__(self, cells: list[Cell], quiet: bool, stream=None) -> None:  # noqa: ANN001
        self.stream = stream or sys.stderr
        self.mode = "off" if quiet else ("bar" if self.stream.isatty() else "lines")
        self.total = len(cells)
        self.todo = sum(c.status == "pending" for c in cells)
        self.done = self.total - self.todo
        self.ran: list[float] = []
        self._progress = None
        self._task = None
        self._cell_left: float | None = None  # the running cell's time left at most, from its step rate

    def eta(self) -> str:
        left = self.todo - len(self.ran)
        if left <= 0:
            return "ETA 0s"
        if left == 1 and self._cell_left is not None:  # the last cell, from its own rate (its batches only)
            return f"ETA ≤{_duration(self._cell_left)} training"
        if not self.ran:
            return "ETA -"
        return f"ETA {_duration(statistics.fmean(self.ran) * left)}"

    def __enter__(self) -> GridProgress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
                                      TextColumn("{task.description}"), console=Console(file=self.stream))
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total, completed=self.done, eta=self.eta())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def skipped(self, cells: list[Cell]) -> None:
        """Say which cells are skipped (already finished), before the first one runs."""
        if not cells or self.mode == "off":
            return
        text = f"{len(cells)} of {self.total} cells already finished (same config hash); skipping them"
        if self.mode == "bar":
            self._progress.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, cell: Cell, resume_after: int | None = None) -> None:
        """``resume_after``: the cell goes on from its checkpoint after that many epochs."""
        verb = "running" if resume_after is None else f"resuming after epoch {resume_after}:"
        self._cell_left = None
        if self.mode == "bar":
            self._progress.update(self._task, description=f"{verb} {cell.label}")
        elif self.mode == "lines":  # a log file shows what is running, not only what finished
            print(f"{verb} cell {self.done + 1}/{self.total} {cell.label}  {self.eta()}", file=self.stream, flush=True)

    def epoch(self, cell: Cell, line: str) -> None:
        """A finished training epoch of the running cell (from training.EpochPrinter)."""
        if self.mode == "bar":  # the bar has room for the epoch and the val loss only
            short = "  ".join(p for p in line.split("  ") if p.startswith(("epoch", "val_loss")))
            self._progress.update(self._task, description=f"running {cell.label}: {short}")
        elif self.mode == "lines":
            print(f"  {line}", file=self.stream, flush=True)

    def step(self, cell: Cell, info: Any) -> None:
        """Where the running cell's epoch stands (a ``training.StepProgress``; at most one every ``step_every`` s)."""
        self._cell_left = info.run_left
        left = _duration(info.run_left)
        if self.mode == "bar":
            where = f"epoch {info.epoch}/{info.epochs} step {info.step}/{info.steps}, ≤{left} training left"
            self._progress.update(self._task, eta=self.eta(), description=f"running {cell.label}: {where}")
        elif self.mode == "lines":
            print(f"  {info.line()}, at most {left} of training left in this cell (then validation and test)",
                  file=self.stream, flush=True)

    @property
    def step_every(self) -> float | None:
        """Seconds between in-epoch reports: every second on the bar, every 5 minutes in a log, none when quiet."""
        return {"bar": 1.0, "lines": 300.0}.get(self.mode)

    def finish(self, cell: Cell) -> None:
        self._cell_left = None
        self.done += 1
        self.ran.append(cell.seconds)
        line = f"cell {self.done}/{self.total} {cell.label}: "
        if cell.status == "done":
            line += (f"test MSE {cell.metrics['test_mse']:.4f} MAE {cell.metrics['test_mae']:.4f}  "
                     f"{cell.seconds:.1f} s")
        else:
            line += f"FAILED after {cell.seconds:.1f} s ({cell.error})"
        if self.mode == "bar":
            self._progress.update(self._task, advance=1, eta=self.eta(), description="")
            self._progress.console.print(line, markup=False)
        elif self.mode == "lines":
            print(f"{line}  {self.eta()}", file=self.stream, flush=True)


# -- running --------------------------------------------------------------------------------------------------------
def cell_checkpoint_dir(uri: str, name: str, config_hash: str) -> Path:
    from forecast.tracking import checkpoint_root

    return checkpoint_root(uri) / name / config_hash


def _run_cell(cell: Cell, uri: str, experiment: str, parent_id: str, name: str,
              progress: GridProgress | None = None) -> None:
    from forecast.pipeline import TrainOptions, run_name, train
    from forecast.training import EpochPrinter

    rname = f"{run_name(cell.cfg, Path(cell.dataset).stem)}_s{cell.seed}"  # e.g. dlinear_ETTh1_sl336_pl96_s2021
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
    except KeyboardInterrupt:
        cell.seconds = time.perf_counter() - t0
        raise
    except SystemExit as exc:
        # Lightning turns Ctrl-C inside fit into sys.exit(1) after ignoring SIGINT (the run ends FAILED):
        # restore Ctrl-C, mark the cell's run KILLED and hand a KeyboardInterrupt back to the grid.
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _mark_killed(uri, parent_id, cell.config_hash)
        cell.seconds = time.perf_counter() - t0
        raise KeyboardInterrupt from None
    except Exception as err:  # one broken cell does not stop the grid; its run is FAILED
        cell.status, cell.error = "failed", (str(err).splitlines() or [type(err).__name__])[0][:400]
    else:
        cell.status, cell.run_id, cell.experiment_id = "done", res.run_id, res.experiment_id
        cell.metrics, cell.n_params = dict(res.metrics), res.n_params
        for empty in (opts.checkpoint_dir.parent, opts.checkpoint_dir.parent.parent):  # no empty folders left
            with contextlib.suppress(OSError):
                empty.rmdir()
    cell.seconds = time.perf_counter() - t0


def _mark_killed(uri: str, parent_id: str, config_hash: str) -> None:
    """End the interrupted cell's run (nested under ``parent_id``) as KILLED; best effort."""
    from forecast import tracking

    with contextlib.suppress(Exception):
        mlf = tracking.client(uri)
        parent = mlf.get_run(parent_id)
        runs = mlf.search_runs([parent.info.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                               filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                             f"tags.config_hash = '{config_hash}'")
        if runs and runs[0].info.status != "FINISHED":
            mlf.set_terminated(runs[0].info.run_id, "KILLED")


def run(opts: BenchmarkOptions) -> BenchmarkResult:
    """Run (or resume) the grid; returns every cell with its outcome and the aggregated rows."""
    from mlflow.entities import Metric, Param

    from forecast import tracking

    t0 = time.perf_counter()
    cells = plan(opts)
    published = load_published()
    uri = tracking.resolve_uri(opts.tracking_uri)
    mlf = tracking.client(uri)
    experiment = opts.experiment or f"benchmark-{opts.name}"
    exp_id = tracking.experiment_id(mlf, experiment, uri)
    done = finished_runs(mlf, opts.name)
    for cell in cells:
        prev = done.get(cell.config_hash)
        if prev is not None:
            cell.status, cell.run_id, cell.experiment_id = "skipped", prev.info.run_id, prev.info.experiment_id
            cell.metrics, cell.n_params = dict(prev.data.metrics), _n_params(prev.data.params)
        else:
            cell.saved_epochs = tracking.saved_epochs(cell_checkpoint_dir(uri, opts.name, cell.config_hash))
    tags = {**_version_tags(), "benchmark": opts.name, "benchmark_role": "parent",
            "mlflow.runName": f"benchmark_{opts.name}"}
    parent = mlf.create_run(exp_id, run_name=f"benchmark_{opts.name}", tags=tags)
    parent_id = parent.info.run_id
    status, interrupted = "FAILED", False
    try:
        params = {"benchmark.name": opts.name, "benchmark.models": ",".join(dict.fromkeys(c.model for c in cells)),
                  "benchmark.datasets": ",".join(dict.fromkeys(c.dataset for c in cells)),
                  "benchmark.horizons": ",".join(map(str, opts.horizons)),
                  "benchmark.seeds": ",".join(str(s) for s in dict.fromkeys(c.seed for c in cells)),
                  "benchmark.cells": len(cells),
                  **{f"set.{k}": v for k, v in opts.overrides.items()}}
        mlf.log_batch(parent_id, params=[Param(k, v) for k, v in tracking.params_of(params).items()])
        with _sigterm_as_interrupt(), GridProgress(cells, opts.quiet or opts.collect) as progress:
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
        _log_tables(mlf, parent_id, rows)
        status = "KILLED" if interrupted else "FINISHED"
        return BenchmarkResult(opts.name, experiment, exp_id, parent_id, uri, cells, rows, wall, interrupted,
                               collected=opts.collect)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        mlf.set_terminated(parent_id, status)


def _version_tags() -> dict[str, str]:
    import forecast
    from forecast.tracking import git_commit

    tags = {"forecast_version": forecast.__version__}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def _log_tables(mlf, run_id: str, rows: list[Row]) -> None:  # noqa: ANN001
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "results.md").write_text(markdown_table(rows) + "\n")
        (Path(tmp) / "results.csv").write_text(csv_table(rows))
        mlf.log_artifacts(run_id, tmp)


# -- results --------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def make_row(dataset: str, horizon: int, model: str, lookback: int, records: list[dict[str, Any]],
             published: dict) -> Row:
    """Aggregate runs of one cell (one per seed): mean and sample std of test MSE/MAE, mean training time.

    Each record has ``test_mse``, ``test_mae``, ``train_seconds``, ``n_params``, ``run_id``, ``experiment_id``.
    """
    mse, mse_std = _mean_std([r["test_mse"] for r in records])
    mae, mae_std = _mean_std([r["test_mae"] for r in records])
    secs, _ = _mean_std([r.get("train_seconds", math.nan) for r in records])
    n_params = next((r["n_params"] for r in records if r.get("n_params") is not None), None)
    return Row(dataset, horizon, model, lookback, len(records), mse, mse_std, mae, mae_std, secs, n_params,
               [r["run_id"] for r in records], [r.get("experiment_id") for r in records],
               lookup(published, model, dataset, horizon, lookback))


def aggregate_cells(cells: list[Cell], published: dict) -> list[Row]:
    """One row per (dataset, horizon, model) over the seeds whose cell has test metrics, in grid order."""
    groups: dict[tuple[str, int, str, int], list[dict[str, Any]]] = {}
    for c in cells:
        if c.status in ("done", "skipped") and "test_mse" in c.metrics:
            groups.setdefault((c.dataset, c.horizon, c.model, c.cfg.data.seq_len), []).append(
                {**c.metrics, "n_params": c.n_params, "run_id": c.run_id, "experiment_id": c.experiment_id})
    return [make_row(d, h, m, L, recs, published) for (d, h, m, L), recs in groups.items()]


def fmt(value: float, std: float = math.nan, digits: int = 3) -> str:
    """``0.384`` or ``0.384 ± 0.002``; empty for NaN."""
    if value != value:
        return ""
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std == std else "")


def fmt_delta(value: float) -> str:
    return "" if value != value else f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: never "-0.000"


TABLE_HEADER = ["dataset", "H", "model", "L", "seeds", "test MSE", "test MAE", "published MSE", "Δ MSE",
                "published MAE", "Δ MAE", "train s", "params"]


FULL_WIDTH = 150
COMPACT_HEADER = ["dataset", "H", "model", "MSE", "MAE", "published (Δ)", "s"]


def compact_cells(r: Row) -> list[str]:
    """A row for a narrow terminal (:data:`COMPACT_HEADER`): published MSE with the difference in brackets."""
    pub = f"{r.published.mse:.3f} ({fmt_delta(r.delta_mse)})" if r.published and r.delta_mse == r.delta_mse else ""
    secs = "" if r.train_seconds != r.train_seconds else f"{r.train_seconds:.0f}"
    return [r.dataset, str(r.horizon), r.model, fmt(r.mse, r.mse_std), fmt(r.mae, r.mae_std), pub, secs]


def table_cells(r: Row) -> list[str]:
    """A row as the strings of :data:`TABLE_HEADER` (terminal and Markdown tables)."""
    pub = r.published
    return [r.dataset, str(r.horizon), r.model, str(r.lookback), str(r.n), fmt(r.mse, r.mse_std),
            fmt(r.mae, r.mae_std), fmt(pub.mse) if pub else "", fmt_delta(r.delta_mse),
            fmt(pub.mae) if pub else "", fmt_delta(r.delta_mae),
            "" if r.train_seconds != r.train_seconds else f"{r.train_seconds:.1f}",
            "" if r.n_params is None else f"{r.n_params:,}"]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def csv_table(rows: list[Row]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "horizon", "model", "lookback", "seeds", "mse", "mse_std", "mae", "mae_std",
                "published_mse", "published_mae", "delta_mse", "delta_mae", "published_source", "train_seconds",
                "n_params", "run_ids"])
    for r in rows:
        p = r.published
        w.writerow([r.dataset, r.horizon, r.model, r.lookback, r.n, _num(r.mse), _num(r.mse_std), _num(r.mae),
                    _num(r.mae_std), _num(p.mse) if p else "", _num(p.mae) if p else "", _num(r.delta_mse),
                    _num(r.delta_mae), p.source if p else "", _num(r.train_seconds),
                    "" if r.n_params is None else r.n_params, " ".join(r.run_ids)])
    return buf.getvalue()


def _num(v: float) -> str:
    return "" if v != v else f"{v:.6g}"


def write_markdown(path: Path, result: BenchmarkResult, argv: list[str]) -> Path:
    """The result table as a Markdown file with the command, the wall time and the machine."""
    import shlex

    import torch

    import forecast

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    import os

    lines = [f"# Benchmark `{result.name}`", "",
             f"- command: `{' '.join(shlex.quote(a) for a in argv)}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- wall time: {_duration(result.wall_seconds)} ({result.wall_seconds:.0f} s) for "
             f"{result.count('done') + result.count('failed')} cells run, {result.count('skipped')} skipped "
             f"(already finished), {result.count('failed')} failed"
             + (f", {len(result.pending())} not run yet (--collect: "
                f"{', '.join(c.pending_label for c in result.pending())})" if result.pending() else ""),
             f"- machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cpus, "
             f"torch threads {torch.get_num_threads()}; forecast {forecast.__version__}, torch {torch.__version__}",
             f"- MLflow: parent run `{result.parent_run_id}` in experiment `{result.experiment}`", "",
             markdown_table(result.rows), "",
             "MSE/MAE on the standardized scale over every stride-1 test window; mean ± sample std over seeds "
             "when there are several. Δ = ours − published (configs/published.yaml); train s is the fit time "
             "of one run.", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


# -- the command ----------------------------------------------------------------------------------------------------
def command(opts: BenchmarkOptions) -> None:
    """``forecast benchmark``: run the grid, print the result table, exit 130 if interrupted, 1 if a cell failed."""
    from rich import box
    from rich.table import Table

    from forecast.commands import console

    result = run(opts)
    if opts.markdown is not None:
        write_markdown(opts.markdown, result, ["forecast", *sys.argv[1:]])
    failed = [c for c in result.cells if c.status == "failed"]
    if not opts.quiet:
        out = console()
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=f"benchmark {result.name}: {len(result.rows)} results "
                            f"({result.count('done')} cells run now, {result.count('skipped')} skipped as finished"
                            + (f", {len(failed)} failed" if failed else "") + ")")
        full = out.width >= FULL_WIDTH  # a narrow terminal gets the main columns, never cut values
        for col in TABLE_HEADER if full else COMPACT_HEADER:
            table.add_column(col, justify="left" if col in ("dataset", "model") else "right", no_wrap=True)
        for r in result.rows:
            table.add_row(*(table_cells(r) if full else compact_cells(r)))
        out.print(table)
        if not full:
            out.print("(all columns: a terminal of 150+ columns, --markdown FILE, or `forecast dashboard`)")
        out.print(f"parent run  {result.parent_run_id}  (experiment '{result.experiment}', store "
                  f"{result.tracking_uri}); wall time {_duration(result.wall_seconds)}")
        out.print(f"dashboard   forecast dashboard --name {result.name}"
                  + (f" --tracking-uri {opts.tracking_uri}" if opts.tracking_uri else ""), soft_wrap=True)
    if result.collected and result.pending() and not opts.quiet:
        left = result.pending()
        print(f"--collect: {len(left)} of {len(result.cells)} cells not run yet: "
              f"{', '.join(c.pending_label for c in left)} (the same command without --collect runs them).",
              file=sys.stderr, flush=True)
    if result.interrupted:
        left = sum(c.status == "pending" for c in result.cells)
        print(f"interrupted: the running cell's run is marked KILLED; {left} cells left (run the same command "
              "to resume).", file=sys.stderr, flush=True)
        sys.exit(130)
    if failed:
        print(f"error: {len(failed)} of {len(result.cells)} cells failed; first: {failed[0].label}: "
              f"{failed[0].error}", file=sys.stderr, flush=True)
        sys.exit(1)
