"""The `forecast` command line: thin Typer commands that call into the forecast package.

Heavy imports (torch, lightning, mlflow) happen inside the commands, so `forecast --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Long-term time-series forecasting: train, tune, predict and compare, tracked in MLflow.",
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary tables.")]
TrackingUri = Annotated[
    Optional[str],
    typer.Option("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here."),
]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set model.individual=true (repeatable)."),
]


def _console():
    from forecast.commands import console

    return console()


def _overrides(sets: list[str] | None, **named) -> dict:
    from forecast.config import parse_sets

    out = {key: value for key, value in named.items() if value is not None}
    out.update(parse_sets(sets or []))
    return out


def _run_flags(sets: list[str] | None, horizon, seq_len, epochs, batch_size, lr, seed, devices, precision,
               accelerator, data_dir, **extra) -> dict:
    """The named flags that `train` and `tune` share, as ``section.key`` overrides, then ``--set``."""
    return _overrides(sets, **{"data.horizon": horizon, "data.seq_len": seq_len, "train.epochs": epochs,
                               "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed,
                               "train.devices": devices, "train.precision": precision,
                               "train.accelerator": accelerator,
                               "data.data_dir": str(data_dir) if data_dir else None, **extra})


@app.command()
def datasets(
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Look here first.")] = None,
) -> None:
    """List the benchmark datasets: shape, frequency, split and whether the file is here."""
    from rich.table import Table

    from forecast.data.catalogue import CATALOGUE
    from forecast.data.store import cache_dir, find_local

    table = Table(title="Benchmarks")
    for col in ("dataset", "rows", "variates", "freq", "split", "local file"):
        table.add_column(col)
    for info in CATALOGUE.values():
        path = find_local(info, data_dir)
        table.add_row(info.name, f"{info.rows:,}", str(info.n_vars), info.freq, info.split_rule,
                      str(path) if path else f"[dim]missing: downloads to {cache_dir()}[/dim]")
    _console().print(table)


@app.command()
def models() -> None:
    """List the registered models and their defaults."""
    from rich.table import Table

    from forecast.config import load_model_yaml
    from forecast.models import get_spec, model_names

    table = Table(title="Models")
    for col in ("model", "description", "defaults (configs/<model>.yaml)"):
        table.add_column(col, overflow="fold")
    for name in model_names():
        spec = get_spec(name)
        defaults = load_model_yaml(name).get("defaults") or {}
        flat = ", ".join(f"{k}={v}" for sec in ("data", "model", "train") for k, v in (defaults.get(sec) or {}).items()
                         if k in ("seq_len", "d_model", "e_layers", "lr", "epochs", "individual", "attention", "d_state"))
        preset = ", ".join(f"{k}={v}" for k, v in spec.preset.items())
        desc = spec.description + (f"; alias of {spec.alias_of} with {preset}" if spec.alias_of else "")
        if hasattr(spec.cls, "backend_info"):
            desc += f"; selective scan: {spec.cls.backend_info()}"
        table.add_row(name, desc, flat)
    _console().print(table)


@app.command()
def train(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark name or path to your CSV/parquet.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `forecast models`).")],
    horizon: Annotated[Optional[int], typer.Option("--horizon", "-H", help="Forecast horizon H.")] = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", "-L", help="Lookback L.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    devices: Annotated[Optional[int], typer.Option("--devices", help="Devices per node (default 1; >1: DDP).")] = None,
    num_nodes: Annotated[Optional[int], typer.Option("--num-nodes", help="Nodes (default 1; see README).")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="auto (DDP only when asked for more than "
                                                    "one device) or ddp.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile",
                                                    help="torch.compile the network.")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="e.g. 32-true, bf16-mixed.")] = None,
    accelerator: Annotated[Optional[str], typer.Option("--accelerator", help="auto, cpu, gpu.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML file of data/model/train keys.")] = None,
    sets: Sets = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Look for benchmark files here first.")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment (default: dataset).")] = None,
    register: Annotated[Optional[str], typer.Option("--register", help="Register the model under this name.")] = None,
    alias: Annotated[str, typer.Option("--alias", help="Alias set on the registered version.")] = "champion",
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Train a model on a dataset with the paper protocol and record the run in MLflow."""
    from forecast import commands

    overrides = _run_flags(sets, horizon, seq_len, epochs, batch_size, lr, seed, devices, precision, accelerator,
                           data_dir, **{"train.num_nodes": num_nodes, "train.strategy": strategy,
                                        "train.compile": compile})
    commands.train(dataset, model, overrides, config, tracking_uri, experiment, quiet, register, alias)


@app.command()
def tune(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark name or path to your CSV/parquet.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see `forecast models`).")],
    horizon: Annotated[Optional[int], typer.Option("--horizon", "-H", help="Forecast horizon H.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", "-n", help="Trials to run now (default 20, or "
                                                  "unlimited with --timeout; 0: only report or retrain).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds; no trial starts after.")] = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Default <model>-<dataset>-pl<H>.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna RDB URL or sqlite file; default "
                                                   "sqlite:///optuna.db here. Share it to run workers.")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random.")] = "tpe",
    sampler_seed: Annotated[Optional[int], typer.Option("--sampler-seed", help="Default train.seed; give "
                                                        "concurrent workers different ones.")] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none.")] = "median",
    pruner_startup: Annotated[int, typer.Option("--pruner-startup", help="median: trials before pruning.")] = 5,
    pruner_warmup: Annotated[int, typer.Option("--pruner-warmup", help="median: epochs never pruned.")] = 0,
    n_jobs: Annotated[int, typer.Option("--n-jobs", help="Trials in parallel threads of this process.")] = 1,
    retrain_best: Annotated[bool, typer.Option("--retrain-best",
                                               help="Then train the best config and test it.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Optuna plots (HTML) on the parent MLflow run.")] = False,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", "-L", help="Lookback L.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per trial.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Fixes it (not tuned).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Fixes it (not tuned).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    devices: Annotated[Optional[int], typer.Option("--devices", help="Devices to train on (default 1).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="e.g. 32-true, bf16-mixed.")] = None,
    accelerator: Annotated[Optional[str], typer.Option("--accelerator", help="auto, cpu, gpu.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML of data/model/train keys and "
                                                   "search_space.")] = None,
    sets: Sets = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Look for benchmark files here first.")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment",
                                                      help="MLflow experiment (default: dataset).")] = None,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Search hyperparameters with Optuna (pruned, resumable, shareable); every trial is a nested MLflow run."""
    from forecast import commands
    from forecast.tuning import TuneOptions

    overrides = _run_flags(sets, horizon, seq_len, epochs, batch_size, lr, seed, devices, precision, accelerator,
                           data_dir)
    n_trials = trials if trials is not None else (None if timeout else 20)
    opts = TuneOptions(n_trials=n_trials, timeout=timeout, study_name=study_name, storage=storage, sampler=sampler,
                       sampler_seed=sampler_seed, pruner=pruner, pruner_startup=pruner_startup,
                       pruner_warmup=pruner_warmup, n_jobs=n_jobs, retrain_best=retrain_best, report=report,
                       tracking_uri=tracking_uri, experiment=experiment, quiet=quiet)
    commands.tune(dataset, model, overrides, config, opts)


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="runs:/RUN_ID/model, models:/NAME@ALIAS or a folder.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="History: CSV or parquet, date + the model's columns.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write .csv or .parquet (else print).")] = None,
    horizon: Annotated[Optional[int], typer.Option("--horizon", "-H", help="Steps to keep, at most the model's H.")] = None,
    format: Annotated[str, typer.Option("--format", help="wide (date + columns) or long (variable, date, value).")] = "wide",
    fill: Annotated[Optional[str], typer.Option("--fill", help="Fill empty cells: ffill or interpolate.")] = None,
    rolling: Annotated[bool, typer.Option("--rolling", help="Forecast from every window; score vs actuals.")] = False,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Forecast the next H steps after an input's last L rows with a logged model (no training data needed)."""
    from forecast import commands

    commands.predict(model, input, output, horizon, format, fill, rolling, tracking_uri, quiet)


@app.command()
def benchmark(
    models: Annotated[str, typer.Option("--models", help="Comma-separated, e.g. dlinear,itransformer.")],
    datasets: Annotated[str, typer.Option("--datasets", help="Comma-separated, e.g. ETTh1,Weather.")],
    horizons: Annotated[str, typer.Option("--horizons", help="Comma-separated, e.g. 96,192,336,720.")] = "96",
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated; default the configs' seed. "
                                                 "Several: the table shows mean ± std.")] = None,
    name: Annotated[str, typer.Option("--name", help="Benchmark name: MLflow tag, experiment benchmark-<name>, "
                                      "and the key for resuming.")] = "default",
    sets: Sets = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Also write the result table here "
                                                     "(Markdown, with the command and wall time).")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="Default benchmark-<name>.")] = None,
    collect: Annotated[bool, typer.Option("--collect", help="Train nothing: show the cells finished so far and "
                                          "list the others.")] = False,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Run a grid of models x datasets x horizons (x seeds) with the paper defaults; resumable, nested in MLflow.

    The same command again skips the finished cells and resumes an interrupted one at its last finished epoch.
    """
    from forecast import benchmark as bench

    opts = bench.BenchmarkOptions(
        models=bench.parse_list(models, "models"), datasets=bench.parse_list(datasets, "datasets"),
        horizons=bench.parse_list(horizons, "horizons", as_int=True),
        seeds=bench.parse_list(seeds, "seeds", as_int=True) if seeds is not None else None, name=name,
        overrides=_overrides(sets), tracking_uri=tracking_uri, experiment=experiment, quiet=quiet, markdown=markdown,
        collect=collect)
    bench.command(opts)


@app.command()
def dashboard(
    name: Annotated[Optional[str], typer.Option("--name", help="Only the runs of this benchmark.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for leaderboard.html/.md/.csv.")] = Path("dashboards"),
    ui_url: Annotated[Optional[str], typer.Option("--ui-url", help="Link run ids to this MLflow UI, e.g. "
                                                  "http://127.0.0.1:5000.")] = None,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Write an offline HTML leaderboard (plus Markdown and CSV) from the runs in the MLflow store."""
    from forecast import dashboard as dash

    dash.command(tracking_uri, name, output, ui_url, quiet)


@app.command()
def runs(
    tracking_uri: TrackingUri = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs to show.")] = 20,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset's experiment.")] = None,
) -> None:
    """Show the most recent runs with their test metrics."""
    from forecast import commands

    commands.runs(tracking_uri, limit, dataset)


@app.command()
def ui(
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; 127.0.0.1 unless you ask.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 5000,
) -> None:
    """Start the MLflow UI on the same store (127.0.0.1 by default)."""
    from forecast import commands

    commands.ui(tracking_uri, host, port)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; no stack trace."""
    from forecast.errors import ForecastError

    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except ForecastError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown option, bad value): typer ships its own copy of click, so match by shape.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
