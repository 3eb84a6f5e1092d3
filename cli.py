"""The `forecast` command line: thin Typer commands that call into the forecast package.

Heavy imports (torch, lightning, mlflow) happen inside the commands, so `forecast --help` stays fast: each command
imports its own module of ``forecast.commands`` and nothing else of the package is loaded before that (the shared
options come from ``forecast.commands.flags``, which imports typer alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.commands.flags import (
    DEFAULT_MODEL, Accelerator, Adaptive, AdaptiveRate, DataDir, Dataset, Experiment, Features, Fill, Force, Future,
    FutureCovariates, Horizon, InitFrom, Level, Model, PastCovariates, Precision, Quantiles, Quiet, RefitScaler, Fresh,
    RollingFlag, Seed, SeqLen, Sets, Split, Target, TrackingUri, overrides_of,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Long-term time-series forecasting: train, tune, predict and compare, tracked in MLflow.",
)

@app.command()
def datasets(
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Look here first.")] = None,
) -> None:
    """List the benchmark datasets: shape, frequency, split and whether the file is here."""
    from forecast.commands.store import datasets as run

    run(data_dir)


@app.command()
def models() -> None:
    """List the registered models and their defaults."""
    from forecast.commands.store import models as run

    run()


@app.command()
def train(
    dataset: Dataset,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model name (see `forecast models`); "
                                                 "default dlinear, or --init-from's.")] = None,
    horizon: Horizon = None,
    seq_len: SeqLen = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Most epochs (early stopping may end sooner); "
                                                  "default: the config's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Train batch size; default: the "
                                                      "config's.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate; default: the config's.")] = None,
    seed: Seed = None,
    split: Split = None,
    fill: Fill = None,
    features: Features = None, target: Target = None,
    past_covariates: PastCovariates = None, future_covariates: FutureCovariates = None,
    devices: Annotated[Optional[int], typer.Option("--devices", help="Devices per node (default 1; >1: DDP).")] = None,
    num_nodes: Annotated[Optional[int], typer.Option("--num-nodes", help="Nodes (default 1; see README).")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="auto (DDP only when asked for more than "
                                                    "one device) or ddp.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile",
                                                    help="torch.compile the network.")] = None,
    precision: Precision = None,
    accelerator: Accelerator = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML file of data/model/train keys.")] = None,
    sets: Sets = None,
    data_dir: DataDir = None,
    experiment: Experiment = None,
    register: Annotated[Optional[str], typer.Option("--register", help="Register the model under this name.")] = None,
    alias: Annotated[str, typer.Option("--alias", help="Alias set on the registered version.")] = "champion",
    fresh: Fresh = False,
    init_from: InitFrom = None,
    refit_scaler: RefitScaler = False,
    force: Force = False,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Train a model on a dataset with the paper protocol and record the run in MLflow.

    An interrupted or killed run of the same config goes on from its last finished epoch (--fresh starts over)."""
    from forecast.commands.train import train as run

    overrides = overrides_of(sets, horizon=horizon, seq_len=seq_len, epochs=epochs, batch_size=batch_size, lr=lr,
                           seed=seed, devices=devices, precision=precision, accelerator=accelerator, data_dir=data_dir,
                           num_nodes=num_nodes, strategy=strategy, compile=compile, split=split, fill=fill,
                           features=features, target=target, past_covariates=past_covariates,
                           future_covariates=future_covariates)
    run(dataset, model, overrides, config, tracking_uri, experiment, quiet, register, alias, fresh, init_from,
        refit_scaler, force)


@app.command()
def tune(
    dataset: Dataset,
    model: Model = DEFAULT_MODEL,
    horizon: Horizon = None,
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
    seq_len: SeqLen = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per trial.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Fixes it (not tuned).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Fixes it (not tuned).")] = None,
    seed: Seed = None,
    devices: Annotated[Optional[int], typer.Option("--devices", help="Devices to train on (default 1).")] = None,
    precision: Precision = None,
    accelerator: Accelerator = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML of data/model/train keys and "
                                                   "search_space.")] = None,
    sets: Sets = None,
    data_dir: DataDir = None,
    split: Split = None,
    fill: Fill = None,
    features: Features = None, target: Target = None,
    past_covariates: PastCovariates = None, future_covariates: FutureCovariates = None,
    experiment: Experiment = None,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Search hyperparameters with Optuna (pruned, resumable, shareable); every trial is a nested MLflow run."""
    from forecast.commands.tune import tune as run
    from forecast.tuning import TuneOptions

    overrides = overrides_of(sets, horizon=horizon, seq_len=seq_len, epochs=epochs, batch_size=batch_size, lr=lr,
                           seed=seed, devices=devices, precision=precision, accelerator=accelerator, data_dir=data_dir,
                           split=split, fill=fill, features=features, target=target, past_covariates=past_covariates,
                           future_covariates=future_covariates)
    n_trials = trials if trials is not None else (None if timeout else 20)
    opts = TuneOptions(n_trials=n_trials, timeout=timeout, study_name=study_name, storage=storage, sampler=sampler,
                       sampler_seed=sampler_seed, pruner=pruner, pruner_startup=pruner_startup,
                       pruner_warmup=pruner_warmup, n_jobs=n_jobs, retrain_best=retrain_best, report=report,
                       tracking_uri=tracking_uri, experiment=experiment, quiet=quiet)
    run(dataset, model, overrides, config, opts)


@app.command()
def predict(
    model: Annotated[str, typer.Option("--model", "-m", help="runs:/RUN_ID/model, models:/NAME@ALIAS or a folder.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="History: CSV or parquet, date + the model's columns "
                                                 "(- : stdin).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write .csv or .parquet (- : CSV to stdout; "
                                                   "else print a table).")] = None,
    horizon: Annotated[Optional[int], typer.Option("--horizon", "-H", help="Steps to keep, at most the model's H.")] = None,
    format: Annotated[str, typer.Option("--format", help="wide (date + columns) or long (variable, date, value).")] = "wide",
    fill: Annotated[Optional[str], typer.Option("--fill", help="Fill empty cells and missing steps: ffill or "
                                                "interpolate.")] = None,
    rolling: RollingFlag = False, adaptive: Adaptive = False, adaptive_rate: AdaptiveRate = None,
    level: Level = None, quantiles: Quantiles = None, future: Future = None,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Forecast the next H steps after an input's last L rows with a logged model (no training data needed)."""
    from forecast.commands.predict import predict as run

    run(model, input, output, horizon, format, fill, rolling, tracking_uri, quiet, level, quantiles, future,
        adaptive, adaptive_rate)


@app.command()
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="runs:/RUN_ID/model, models:/NAME@ALIAS or a logged "
                                       "model's folder.")],
    host: Annotated[str, typer.Option("--host", "-h", help="Bind address; 127.0.0.1 unless you ask.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = 5001,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes.")] = 1,
    max_request_mb: Annotated[float, typer.Option("--max-request-mb", help="Larger request bodies get HTTP 413.")] = 32,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Serve a logged model over HTTP (MLflow's /invocations protocol), with bounded requests and one-line errors."""
    from forecast.commands.serve import serve as run

    run(model, host, port, workers, max_request_mb, tracking_uri, quiet)


@app.command()
def benchmark(
    models: Annotated[str, typer.Option("--models", help="Comma-separated, e.g. dlinear,itransformer; all: every "
                                        "trained model.")],
    datasets: Annotated[str, typer.Option("--datasets", help="Comma-separated, e.g. ETTh1,Weather; all: every "
                                          "benchmark.")],
    horizons: Annotated[Optional[str], typer.Option("--horizons", help="Comma-separated, e.g. 96,192,336,720; "
                                                    "default each dataset's first (96; ILI 24).")] = None,
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
    baselines: Annotated[bool, typer.Option("--baselines", help="Add naive and seasonal_naive to every dataset "
                                            "and horizon (no training; reference lines in the dashboard).")] = False,
    tracking_uri: TrackingUri = None,
    quiet: Quiet = False,
) -> None:
    """Run a grid of models x datasets x horizons (x seeds) with the paper defaults; resumable, nested in MLflow.

    The same command again skips the finished cells and resumes an interrupted one at its last finished epoch.
    """
    from forecast.benchmark.grid import BenchmarkOptions, parse_list
    from forecast.commands.grid import benchmark as run

    opts = BenchmarkOptions(
        models=parse_list(models, "models"), datasets=parse_list(datasets, "datasets"),
        horizons=parse_list(horizons, "horizons", as_int=True) if horizons is not None else None,
        seeds=parse_list(seeds, "seeds", as_int=True) if seeds is not None else None, name=name,
        overrides=overrides_of(sets), tracking_uri=tracking_uri, experiment=experiment, quiet=quiet, markdown=markdown,
        collect=collect, baselines=baselines)
    run(opts)


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
    from forecast.commands.grid import dashboard as run

    run(tracking_uri, name, output, ui_url, quiet)


@app.command()
def runs(
    tracking_uri: TrackingUri = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs to show.")] = 20,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only this dataset's experiment.")] = None,
) -> None:
    """Show the most recent runs with their test metrics."""
    from forecast.commands.store import runs as run

    run(tracking_uri, limit, dataset)


@app.command()
def ui(
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; 127.0.0.1 unless you ask.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = 5000,
) -> None:
    """Start the MLflow UI on the same store (127.0.0.1 by default)."""
    from forecast.commands.store import ui as run

    run(tracking_uri, host, port)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; no stack trace (forecast.commands.entry)."""
    from forecast.commands.entry import run_app

    run_app(app)


def entry() -> None:
    """The ``forecast`` command: :func:`main` with the garbage collector paused through start-up (it resumes when
    the work begins: ``forecast.process.resume_gc``), then an exit without the interpreter's teardown."""
    from forecast.process import pause_gc

    pause_gc()
    from forecast.commands.entry import exit_after

    exit_after(main)


if __name__ == "__main__":
    entry()
