"""Reading the store for the dashboard: finished runs as records, one configuration per cell, rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from forecast.benchmark.results import SCORES, Row, make_row
from forecast.config import LOCATION_KEYS, SECTIONS, digest
from forecast.errors import ForecastError


GROUP_EXCLUDE = ("train.seed", *LOCATION_KEYS)  # a group: one configuration over its seeds


@dataclass
class Record:
    """The fields of one MLflow run that the dashboard uses."""

    run_id: str
    experiment_id: str
    run_name: str
    start_time: int
    model: str
    dataset: str
    horizon: int
    lookback: int
    seed: int | None
    test_mse: float
    test_mae: float
    train_seconds: float
    best_val_loss: float
    n_params: int | None
    group: str  # hash of the config without the seed
    scores: dict[str, float] = field(default_factory=dict)  # CRPS, coverage, the as-published MSE/MAE if logged

    def as_dict(self) -> dict[str, Any]:
        return {"test_mse": self.test_mse, "test_mae": self.test_mae, "train_seconds": self.train_seconds,
                "n_params": self.n_params, "run_id": self.run_id, "experiment_id": self.experiment_id,
                **self.scores}


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def to_record(run: Run) -> Record | None:
    """A run as a Record, or None when it lacks what a leaderboard row needs (model, dataset, H, L)."""
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    model = t.get("model") or p.get("model.name")
    horizon, lookback = _int(p.get("data.horizon")), _int(p.get("data.seq_len"))
    dataset = t.get("dataset") or p.get("data.dataset")
    if dataset and p.get("data.setting"):  # S or MS: its own row, never beside the multivariate one
        dataset = f"{dataset} [{p['data.setting']}]"
    if not model or not dataset or horizon is None or lookback is None or "test_mae" not in m:
        return None
    # An unset key (logged as "") is left out, so runs from before a key existed group with those after it.
    cfg = {k: v for k, v in p.items() if k.split(".")[0] in SECTIONS and k not in GROUP_EXCLUDE and v != ""}
    cfg["model.name"] = model
    group = digest(cfg)
    return Record(run.info.run_id, run.info.experiment_id, run.info.run_name or "", run.info.start_time or 0, model,
                  dataset, horizon, lookback, _int(p.get("train.seed")), m["test_mse"], m["test_mae"],
                  m.get("train_seconds", math.nan), m.get("best_val_loss", math.nan), _int(p.get("model.n_params")),
                  group, {k: m[k] for k in (*SCORES, "test_mse_published", "test_mae_published") if k in m})


def benchmark_names(mlf: MlflowClient) -> list[str]:
    """The benchmark names recorded in the store (from the ``benchmark`` tag of any run)."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    if not exp_ids:
        return []
    runs = mlf.search_runs(exp_ids, filter_string="tags.benchmark != ''", max_results=50000)
    return sorted({r.data.tags["benchmark"] for r in runs if r.data.tags.get("benchmark")})


def collect(mlf: MlflowClient, uri: str, name: str | None = None) -> list[Record]:
    """Every FINISHED run with test metrics (of benchmark ``name`` when given); ForecastError when there is none."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    where = "attributes.status = 'FINISHED' and metrics.test_mse >= 0"
    if name is not None:
        if "'" in name:
            raise ForecastError(f"--name '{name}' must not contain quotes.")
        where += f" and tags.benchmark = '{name}'"
    runs = mlf.search_runs(exp_ids, filter_string=where, max_results=50000) if exp_ids else []
    records = [r for r in (to_record(run) for run in runs) if r is not None]
    if not records:
        if name is not None:
            known = benchmark_names(mlf)
            raise ForecastError(f"no finished runs of benchmark '{name}' in {uri}; "
                                + (f"known benchmarks: {', '.join(known)}." if known else
                                   "no benchmark has been run there (`forecast benchmark ...`)."))
        raise ForecastError(f"no finished runs with test metrics in {uri}; run `forecast train` or "
                            "`forecast benchmark` first, or pass --tracking-uri.")
    return records


def select(records: list[Record]) -> dict[tuple[str, int, str], list[Record]]:
    """``{(dataset, horizon, model): runs}``: the lowest-validation-loss config group, newest run per seed."""
    cells: dict[tuple[str, int, str], dict[str, list[Record]]] = {}
    for r in records:
        cells.setdefault((r.dataset, r.horizon, r.model), {}).setdefault(r.group, []).append(r)
    out: dict[tuple[str, int, str], list[Record]] = {}
    for cell, groups in cells.items():
        best_key: tuple[float, float] | None = None
        for runs in groups.values():
            per_seed: dict[Any, Record] = {}
            for r in sorted(runs, key=lambda r: r.start_time):
                per_seed[r.seed] = r  # the newest run of each seed
            chosen = sorted(per_seed.values(), key=lambda r: r.start_time)
            vals = [r.best_val_loss for r in chosen if r.best_val_loss == r.best_val_loss]
            score = (sum(vals) / len(vals) if vals else math.inf, -max(r.start_time for r in chosen))
            if best_key is None or score < best_key:
                best_key, out[cell] = score, chosen
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0].lower(), kv[0][1], kv[0][2])))


def build_rows(selected: dict[tuple[str, int, str], list[Record]], published: dict) -> list[Row]:
    """Leaderboard rows (reusing the benchmark's aggregation: mean ± std over seeds, published number, Δ)."""
    return [make_row(d, h, m, runs[0].lookback, [r.as_dict() for r in runs], published)
            for (d, h, m), runs in selected.items()]


def best_flags(rows: list[Row]) -> list[tuple[bool, bool]]:
    """For each row: (lowest MSE, lowest MAE) within its (dataset, horizon) block, compared at the 3 decimals
    shown, so every model that ties on the page is marked."""
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for r in rows:
        b = best.get((r.dataset, r.horizon), (math.inf, math.inf))
        best[(r.dataset, r.horizon)] = (min(b[0], round(r.mse, 3)), min(b[1], round(r.mae, 3)))
    return [(round(r.mse, 3) == best[(r.dataset, r.horizon)][0], round(r.mae, 3) == best[(r.dataset, r.horizon)][1])
            for r in rows]


def read_steps(mlf: MlflowClient, run_id: str, name: str, tmp: Path) -> dict[str, list[float]]:
    """The columns of a run's per-step artifact (``step_mse.csv``: mse; ``step_coverage.csv``: coverage_80, ...),
    each a value per horizon step; {} when the run has none."""
    try:
        path = Path(mlf.download_artifacts(run_id, name, str(tmp)))
        header, *lines = path.read_text().strip().splitlines()
        columns = header.split(",")[1:]
        rows = [[float(v) for v in line.split(",")[1:]] for line in lines]
        return {c: [row[j] for row in rows] for j, c in enumerate(columns)}
    except Exception:  # noqa: BLE001 - a missing or unreadable artifact only leaves a gap in the chart
        return {}
