"""What the CLI commands do, with their terminal output. cli.py only parses options."""

from __future__ import annotations

import functools
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
          experiment: str | None, quiet: bool, register: str | None = None, alias: str = "champion") -> None:
    from forecast.config import resolve
    from forecast.pipeline import TrainOptions, train as run_train

    cfg = resolve(model, dataset, overrides, config)
    if register is not None:
        from forecast.serving import check_alias

        check_alias(alias)  # before any training is spent
    result = run_train(cfg, TrainOptions(tracking_uri=tracking_uri, quiet=quiet, experiment=experiment))
    if not result.is_global_zero:  # another DDP rank: rank 0 records, registers and reports
        return
    version = None
    if register is not None:
        from forecast.serving import register as register_model

        version = register_model(result.tracking_uri, result.run_id, register, alias)
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
    where = (f"{result.tracking_uri.rstrip('/')}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
             if result.tracking_uri.startswith(("http://", "https://"))
             else f"`forecast ui` then experiment '{experiment or dataset}'")
    out.print(f"open it {where}, "
              f"or predict with `forecast predict --model runs:/{result.run_id}/model --input history.csv`")
    if version is not None:
        out.print(f"model   registered as '{register}' version {version}, alias @{alias}: "
                  f"`forecast predict --model models:/{register}@{alias} --input history.csv`")


def predict(model: str, input_path: Path, output: Path | None, horizon: int | None, layout: str, fill: str | None,
            rolling: bool, tracking_uri: str | None, quiet: bool) -> None:
    """``forecast predict``: run it (forecast.predict.run_predict), then say what was written or print the forecast."""
    from forecast.predict import run_predict

    result = run_predict(model, input_path, output, horizon, layout, fill, rolling, tracking_uri)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if quiet:
        return
    out = console()
    meta, rl = result.meta, result.rolling
    if rl is not None:
        if rl.metrics:
            m = rl.metrics
            out.print(f"{meta.model_name} rolling forecast: {int(m['windows']):,} scored windows of "
                      f"{rl.windows:,}, {rl.dates.shape[1]} steps each")
            table = Table()
            table.add_column("metric")
            table.add_column("standardized", justify="right")
            table.add_column("original units", justify="right")
            table.add_row("MSE", _fmt(m["mse"]), _fmt(m["mse_orig"]))
            table.add_row("MAE", _fmt(m["mae"]), _fmt(m["mae_orig"]))
            out.print(table)
        else:
            out.print(f"{rl.windows:,} windows forecast; no metrics: the input has no window with all "
                      f"{rl.dates.shape[1]} actuals after it (it needs at least L + h = "
                      f"{meta.seq_len + rl.dates.shape[1]} rows).")
    if result.output is not None and result.frame is not None:
        out.print(f"wrote {result.frame.height:,} rows ({layout}) to {result.output}")
    elif result.frame is not None:
        steps = result.frame.height if layout == "wide" else result.frame.height // meta.n_vars
        out.print(_frame_table(result.frame, f"{meta.model_name}: the next {steps} steps after "
                                             f"{result.rows_in:,} input rows"))


def _frame_table(frame: Any, title: str, max_rows: int = 24, max_cols: int = 9) -> Table:
    """A small rich table of a polars frame: the first and last rows, the first and last columns."""
    cols = frame.columns if len(frame.columns) <= max_cols else [*frame.columns[: max_cols - 1], frame.columns[-1]]
    table = Table(title=title + ("" if len(cols) == len(frame.columns) else
                                 f" ({len(frame.columns) - len(cols)} columns not shown)"))
    for c in cols:
        table.add_column(c, justify="left" if frame[c].dtype.is_temporal() or c == "variable" else "right")
    n = frame.height
    rows = list(range(n)) if n <= max_rows else [*range(max_rows // 2), -1, *range(n - max_rows // 2, n)]
    for i in rows:
        if i < 0:
            table.add_row(*("..." for _ in cols))
            continue
        table.add_row(*(_cell(frame[c][i]) for c in cols))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


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
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        console().print(f"{uri} is an MLflow tracking server: open it in a browser. `forecast ui` serves local "
                        "stores only.")
        return
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


def _set_value(value: Any) -> str:
    """A value as ``--set`` parses it back (YAML): ``1.0e-05``, ``true``, ``32``."""
    import yaml

    return yaml.safe_dump(value).splitlines()[0]


def _command(name: str, dataset: str, model: str, config: Path | None, sets: dict[str, Any],
             extra: list[str]) -> str:
    import shlex

    flags = {"data.horizon": "--horizon", "data.seq_len": "--seq-len", "train.epochs": "--epochs",
             "train.seed": "--seed", "data.data_dir": "--data-dir"}
    parts = ["forecast", name, "--dataset", dataset, "--model", model]
    for key, flag in flags.items():
        if sets.get(key) is not None:
            parts += [flag, str(sets[key])]
    if config is not None:
        parts += ["--config", str(config)]
    for key, value in sets.items():
        if key not in flags:
            parts += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(p) for p in parts + extra)


def tune(dataset: str, model: str, overrides: dict, config: Path | None, opts: Any) -> None:
    """Run or resume an Optuna study (see forecast.tuning), then print the top trials and how to retrain the best.

    Exits 130 after Ctrl-C (the running trial is FAILED, the others are kept) and 1 when every trial failed.
    """
    from forecast.tuning import run_study

    result = run_study(model, dataset, overrides, config, opts)
    if result.interrupted:
        print(f"interrupted: the running trial is marked FAILED; study '{result.study_name}' in {result.storage} "
              f"keeps its {result.n_total} trials ({result.n_complete_total} complete); run the same command to "
              "resume.", file=sys.stderr, flush=True)
        sys.exit(130)
    if result.trials_run and result.n_complete == 0 and result.n_pruned == 0:
        print(f"error: all {len(result.trials_run)} trials failed; first error: {result.first_error}",
              file=sys.stderr, flush=True)
        sys.exit(1)
    if opts.quiet:
        return
    out = console()
    say = functools.partial(out.print, highlight=False, markup=False, soft_wrap=True)  # commands print verbatim
    table = Table(title=f"study {result.study_name}: {result.n_total} trials ({len(result.trials_run)} now: "
                        f"{result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed)")
    table.add_column("trial", justify="right")
    table.add_column("best val loss", justify="right")
    table.add_column("epochs", justify="right")
    keys = list(result.space) or sorted({k for t in result.top for k in t["params"]})
    for key in keys:
        table.add_column(key, justify="right")
    for t in result.top:
        table.add_row(f"#{t['number']}", f"{t['value']:.5f}", str(t["epochs"]),
                      *[_fmt(t["params"][k]) if k in t["params"] else "" for k in keys])
    out.print(table)
    say(f"parent run  {result.parent_run_id}  (experiment '{result.experiment}', store {result.tracking_uri})")
    if result.report_artifacts:
        say(f"report      {', '.join(result.report_artifacts)} on the parent run")
    if result.best_trial is None:
        say("no completed trial yet; run the same command again to continue the study.")
        return
    common = []
    if opts.tracking_uri:
        common += ["--tracking-uri", opts.tracking_uri]
    if opts.experiment:
        common += ["--experiment", opts.experiment]
    retrain = _command("tune", dataset, model, config, overrides,
                       ["--study-name", result.study_name, "--storage", result.storage, *common,
                        "--trials", "0", "--retrain-best"])
    as_train = _command("train", dataset, model, config, {**overrides, **result.best_params}, common)
    if result.retrain is not None:
        m = result.retrain.metrics
        say(f"retrained best (trial #{result.best_trial}): test MSE {m['test_mse']:.4f}, test MAE "
            f"{m['test_mae']:.4f}, run id {result.retrain.run_id}")
    else:
        say(f"retrain the best (trial #{result.best_trial}, val loss {result.best_value:.5f}) and test it:")
        say(f"  {retrain}")
    say("or train it as a plain run:")
    say(f"  {as_train}")
