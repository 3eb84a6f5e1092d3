"""Benchmark results: cells aggregated over seeds into rows with the published numbers, and their tables
(terminal cells, Markdown, CSV). The dashboard reads rows through this module only."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import platform
import shlex
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forecast
from forecast.benchmark.grid import Cell
from forecast.process import write_text
from forecast.published import Published, lookup


def duration(seconds: float) -> str:
    """``1h02m``, ``3m07s`` or ``42s``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")



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
    # the probabilistic scores, means over the seeds (NaN for runs from before they were logged)
    crps: float = math.nan
    coverage_80: float = math.nan
    coverage_90: float = math.nan
    # over the test windows the official loader kept (train.published_drop_last; NaN where nothing was dropped)
    mse_as_published: float = math.nan
    mae_as_published: float = math.nan

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
    other_settings: int = 0  # finished cells of this benchmark whose settings match none of these cells
    their_settings: tuple[str, ...] = ()  # the --set flags those cells were run with (--collect only)

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "pending"]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.cells)


SCORES = ("test_crps", "test_coverage_80", "test_coverage_90")  # the probabilistic scores a row carries
AS_PUBLISHED = ("MSE as published: over the test windows the official code scored, where its test loader dropped the "
                "last partial batch (train.published_drop_last: LTSF-Linear's Linear, NLinear and DLinear), the like "
                "for like to the published MSE; blank where the official code kept every window.")


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
    scores = [_mean_std([r.get(k, math.nan) for r in records])[0]
              for k in (*SCORES, "test_mse_published", "test_mae_published")]
    return Row(dataset, horizon, model, lookback, len(records), mse, mse_std, mae, mae_std, secs, n_params,
               [r["run_id"] for r in records], [r.get("experiment_id") for r in records],
               lookup(published, model, dataset, horizon, lookback), *scores)


def aggregate_cells(cells: list[Cell], published: dict) -> list[Row]:
    """One row per (dataset, horizon, model) over the seeds whose cell has test metrics, in grid order."""
    groups: dict[tuple[str, int, str, int], list[dict[str, Any]]] = {}
    for c in cells:
        if c.status in ("done", "skipped") and "test_mse" in c.metrics:
            label = f"{c.dataset} [{c.cfg.data.setting}]" if c.cfg.data.setting else c.dataset  # S, MS: own rows
            groups.setdefault((label, c.horizon, c.model, c.cfg.data.seq_len), []).append(
                {**c.metrics, "n_params": c.n_params, "run_id": c.run_id, "experiment_id": c.experiment_id})
    return [make_row(d, h, m, L, recs, published) for (d, h, m, L), recs in groups.items()]


def fmt(value: float, std: float = math.nan, digits: int = 3) -> str:
    """``0.384`` or ``0.384 ± 0.002``; empty for NaN."""
    if value != value:
        return ""
    return f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std == std else "")


def fmt_delta(value: float) -> str:
    return "" if value != value else f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: never "-0.000"


TABLE_HEADER = ["dataset", "H", "model", "L", "seeds", "test MSE", "test MAE", "MSE as published", "published MSE",
                "Δ MSE", "published MAE", "Δ MAE", "CRPS", "cover 80/90", "train s", "params"]
# The terminal's full table (a one-seed row fits 150 columns) leaves the as-published MSE to the Markdown, the CSV and
# the dashboard.
TERMINAL_HEADER = [c for c in TABLE_HEADER if c != "MSE as published"]
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
            fmt(r.mae, r.mae_std), fmt(r.mse_as_published), fmt(pub.mse) if pub else "", fmt_delta(r.delta_mse),
            fmt(pub.mae) if pub else "", fmt_delta(r.delta_mae), fmt(r.crps),
            "" if r.coverage_80 != r.coverage_80 else f"{r.coverage_80:.2f}/{r.coverage_90:.2f}",
            "" if r.train_seconds != r.train_seconds else f"{r.train_seconds:.1f}",
            "" if r.n_params is None else f"{r.n_params:,}"]


def terminal_cells(r: Row) -> list[str]:
    """A row as the strings of :data:`TERMINAL_HEADER`."""
    return [c for col, c in zip(TABLE_HEADER, table_cells(r)) if col in TERMINAL_HEADER]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def csv_table(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "horizon", "model", "lookback", "seeds", "mse", "mse_std", "mae", "mae_std",
                "published_mse", "published_mae", "delta_mse", "delta_mae", "published_source", "train_seconds",
                "n_params", "run_ids", "crps", "coverage_80", "coverage_90", "mse_as_published", "mae_as_published"])
    for r in rows:
        p = r.published
        w.writerow([r.dataset, r.horizon, r.model, r.lookback, r.n, _num(r.mse), _num(r.mse_std), _num(r.mae),
                    _num(r.mae_std), _num(p.mse) if p else "", _num(p.mae) if p else "", _num(r.delta_mse),
                    _num(r.delta_mae), p.source if p else "", _num(r.train_seconds),
                    "" if r.n_params is None else r.n_params, " ".join(r.run_ids), _num(r.crps),
                    _num(r.coverage_80), _num(r.coverage_90), _num(r.mse_as_published), _num(r.mae_as_published)])
    return buf.getvalue()


def _num(v: float) -> str:
    return "" if v != v else f"{v:.6g}"


def write_markdown(path: Path, result: BenchmarkResult, argv: list[str]) -> Path:
    """The result table as a Markdown file with the command, the wall time and the machine."""
    import torch  # only for the machine line: the dashboard imports this module without the training stack

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    lines = [f"# Benchmark `{result.name}`", "",
             f"- command: `{' '.join(shlex.quote(a) for a in argv)}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- wall time: {duration(result.wall_seconds)} ({result.wall_seconds:.0f} s) for "
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
             f"of one run. {AS_PUBLISHED}", ""]
    path = Path(path)
    write_text(path, "\n".join(lines))  # the folder was checked before the grid ran; never a half-written file
    return path
