"""What is in the store and the catalogue: ``forecast runs``, ``forecast ui``, ``forecast datasets``, ``forecast
models``."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from rich.table import Table

from forecast import tracking
from forecast.commands.flags import check_port, exposure_warning
from forecast.config import SECTIONS
from forecast.console import console, fmt
from forecast.data.catalogue import CATALOGUE, dataset_name
from forecast.data.store import cache_dir, find_local
from forecast.errors import ForecastError
from forecast.models import get_spec, model_names
from forecast.resolve import load_model_yaml


def datasets(data_dir: Path | None) -> None:
    """``forecast datasets``: the benchmarks, their shape, split and whether the file is here."""
    table = Table(title="Benchmarks")
    for col in ("dataset", "rows", "variates", "freq", "split", "local file"):
        table.add_column(col)
    for info in CATALOGUE.values():
        path = find_local(info, data_dir)
        table.add_row(info.name, f"{info.rows:,}", str(info.n_vars), info.freq, info.split_rule,
                      str(path) if path else f"[dim]missing: downloads to {cache_dir()}[/dim]")
    console().print(table)


def models() -> None:
    """``forecast models``: the registered models, their paper defaults and aliases."""
    table = Table(title="Models")
    for col in ("model", "description", "defaults (configs/<model>.yaml)"):
        table.add_column(col, overflow="fold")
    for name in model_names():
        spec = get_spec(name)
        defaults = load_model_yaml(name).get("defaults") or {}
        flat = ", ".join(f"{k}={v}" for sec in SECTIONS for k, v in (defaults.get(sec) or {}).items()
                         if k in ("seq_len", "d_model", "e_layers", "lr", "epochs", "individual", "attention", "d_state"))
        preset = ", ".join(f"{k}={v}" for k, v in spec.preset.items())
        desc = spec.description + (f"; alias of {spec.alias_of} with {preset}" if spec.alias_of else "")
        if hasattr(spec.cls, "backend_info"):
            desc += f"; selective scan: {spec.cls.backend_info()}"
        table.add_row(name, desc, flat)
    console().print(table)


def runs(tracking_uri: str | None, limit: int, dataset: str | None) -> None:
    """``forecast runs``: the most recent runs with their test metrics."""
    if limit < 1:
        raise ForecastError(f"--limit {limit} must be at least 1 (the number of runs to show).")
    uri = tracking.resolve_uri(tracking_uri)
    tracking.require_store(uri)
    mlf = tracking.client(uri)
    exps = mlf.search_experiments()
    if dataset:  # as given to train: a benchmark's name in any case, or a file's path (its experiment is the stem)
        exps = [e for e in exps if e.name.lower() in (dataset.lower(), dataset_name(dataset).lower())]
        if not exps:
            raise ForecastError(f"no experiment named '{dataset}' in {uri}; run `forecast runs` to see them all.")
    found = mlf.search_runs([e.experiment_id for e in exps], max_results=limit, order_by=["attributes.start_time DESC"])
    table = Table(title=f"Recent runs in {uri}")
    for col in ("run", "run id", "status", "test MSE", "test MAE", "MSE (orig)", "CRPS", "cover 80%", "started"):
        table.add_column(col)
    for r in found:
        m = r.data.metrics
        started = dt.datetime.fromtimestamp(r.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
        table.add_row(r.info.run_name or "", r.info.run_id, r.info.status, fmt(m.get("test_mse", "")),
                      fmt(m.get("test_mae", "")), fmt(m.get("test_mse_orig", "")), fmt(m.get("test_crps", "")),
                      fmt(m.get("test_coverage_80", "")), started)
    console().print(table)


def ui(tracking_uri: str | None, host: str, port: int) -> None:
    """``forecast ui``: the MLflow UI on a local store (127.0.0.1 unless asked)."""
    uri = tracking.resolve_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        console().print(f"{uri} is an MLflow tracking server: open it in a browser. `forecast ui` serves local "
                        "stores only.")
        return
    tracking.require_store(uri)  # never an empty UI on a store a typo made up
    check_port(host, port)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = tracking.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    exposed = exposure_warning(host)
    if exposed:
        print(exposed, file=sys.stderr, flush=True)
    console().print(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C stops it)")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        code = subprocess.run(cmd, check=False, env=env).returncode
    except KeyboardInterrupt:
        return
    if code:  # the UI failed after its own log lines: its exit code, not 0
        raise SystemExit(code)
