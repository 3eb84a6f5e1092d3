"""The benchmark's records in MLflow: cells finished earlier (by config hash), the killed cell's run, the parent
run's tags and tables, and where a running cell keeps its resumable checkpoint."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import forecast
from forecast import tracking
from forecast.benchmark.results import Row, csv_table, markdown_table


def finished_runs(mlf: MlflowClient, name: str) -> dict[str, Any]:
    """``{config_hash: run}`` of the FINISHED cell runs with test metrics of benchmark ``name`` (newest wins)."""
    exp_ids = [e.experiment_id for e in mlf.search_experiments()]
    if not exp_ids:
        return {}
    runs = mlf.search_runs(exp_ids, filter_string=f"tags.benchmark = '{name}' and attributes.status = 'FINISHED' "
                                                  "and tags.benchmark_role = 'cell'",
                           max_results=50000, order_by=["attributes.start_time ASC"])
    return {r.data.tags["config_hash"]: r for r in runs
            if "config_hash" in r.data.tags and "test_mse" in r.data.metrics}


def their_settings(mlf: MlflowClient, runs: list[Any]) -> list[str]:
    """The flags the benchmark commands that made ``runs`` (cell runs) were given, one string per distinct set
    (``--set train.epochs=1``; ``--set`` itself is logged on each parent run as ``set.<key>``)."""
    found: dict[str, None] = {}
    parents = dict.fromkeys(r.data.tags["mlflow.parentRunId"] for r in runs if "mlflow.parentRunId" in r.data.tags)
    for parent_id in parents:
        with contextlib.suppress(MlflowException):  # a parent deleted since: nothing to say about it
            sets = sorted((k[4:], v) for k, v in mlf.get_run(parent_id).data.params.items() if k.startswith("set."))
            found[" ".join(f"--set {k}={v}" for k, v in sets) or "no --set"] = None
    return list(found)


def n_params(params: dict[str, str]) -> int | None:
    with contextlib.suppress(KeyError, ValueError):
        return int(params["model.n_params"])
    return None


def cell_checkpoint_dir(uri: str, name: str, config_hash: str) -> Path:
    return tracking.checkpoint_root(uri) / name / config_hash


def version_tags() -> dict[str, str]:
    tags = {"forecast_version": forecast.__version__}
    commit = tracking.git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def log_tables(mlf: MlflowClient, run_id: str, rows: list[Row]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "results.md").write_text(markdown_table(rows) + "\n")
        (Path(tmp) / "results.csv").write_text(csv_table(rows))
        mlf.log_artifacts(run_id, tmp)
