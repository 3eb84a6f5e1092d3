"""What the CLI commands do, with their terminal output. cli.py only parses options."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from forecast.errors import ForecastError


def console() -> Console:
    """A console; when output is not a terminal, wide enough that run ids are never cut."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def train(dataset: str, model: str, overrides: dict, config: Path | None, tracking_uri: str | None,
          experiment: str | None, quiet: bool) -> None:
    from forecast.config import resolve
    from forecast.pipeline import TrainOptions, train as run_train

    cfg = resolve(model, dataset, overrides, config)
    result = run_train(cfg, TrainOptions(tracking_uri=tracking_uri, quiet=quiet, experiment=experiment))
    if quiet:
        return
    m = result.metrics
    table = Table(title=f"{result.run_name}: {int(m.get('test_windows', 0)):,} test windows", show_header=True)
    table.add_column("metric")
    table.add_column("standardized", justify="right")
    table.add_column("original units", justify="right")
    table.add_row("test MSE", _fmt(m["test_mse"]), _fmt(m["test_mse_orig"]))
    table.add_row("test MAE", _fmt(m["test_mae"]), _fmt(m["test_mae_orig"]))
    table.add_row("best val loss", _fmt(result.best_val_loss), "")
    out = console()
    out.print(table)
    out.print(f"epochs {result.epochs_run} (best {result.best_epoch + 1}), {result.train_seconds:.1f} s, "
                  f"{result.n_params:,} parameters")
    out.print(f"run id  {result.run_id}")
    out.print(f"store   {result.tracking_uri}")
    out.print(f"open it `forecast ui` then experiment '{experiment or dataset}', "
                  f"or predict with `forecast predict --model runs:/{result.run_id}/model --input history.csv`")


def runs(tracking_uri: str | None, limit: int, dataset: str | None) -> None:
    from forecast import tracking

    uri = tracking.resolve_uri(tracking_uri)
    _require_store(uri)
    mlf = tracking.client(uri)
    exps = mlf.search_experiments()
    if dataset:
        exps = [e for e in exps if e.name.lower() == dataset.lower()]
        if not exps:
            raise ForecastError(f"no experiment named '{dataset}' in {uri}; run `forecast runs` to see them all.")
    found = mlf.search_runs([e.experiment_id for e in exps], max_results=limit, order_by=["attributes.start_time DESC"])
    table = Table(title=f"Recent runs in {uri}")
    for col in ("run", "run id", "status", "test MSE", "test MAE", "MSE (orig)", "started"):
        table.add_column(col)
    import datetime as dt

    for r in found:
        m = r.data.metrics
        started = dt.datetime.fromtimestamp(r.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
        table.add_row(r.info.run_name or "", r.info.run_id, r.info.status, _fmt(m.get("test_mse", "")),
                      _fmt(m.get("test_mae", "")), _fmt(m.get("test_mse_orig", "")), started)
    console().print(table)


def _require_store(uri: str) -> None:
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ForecastError(f"no MLflow store at {uri}; train a model first (`forecast train ...`) "
                            "or pass --tracking-uri.")


def ui(tracking_uri: str | None, host: str, port: int) -> None:
    from forecast import tracking

    uri = tracking.resolve_uri(tracking_uri)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    console().print(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C stops it)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        subprocess.run(cmd, check=False, env=env)
    except KeyboardInterrupt:
        pass
