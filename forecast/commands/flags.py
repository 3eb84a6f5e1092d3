"""The options that several commands share, as Typer annotations, how the named flags become config overrides, and
the checks of the server options serve and ui share (cli.py's vocabulary; no heavy imports, so `forecast --help`
stays fast)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from forecast.errors import ForecastError

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary tables.")]
TrackingUri = Annotated[
    Optional[str],
    typer.Option("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db here."),
]
Sets = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set model.individual=true (repeatable)."),
]
# The options `train` and `tune` share (their keys: forecast.config.FLAGS).
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Benchmark name or path to your CSV/parquet.")]
DEFAULT_MODEL = "dlinear"  # the fastest model that reaches the papers' numbers
Model = Annotated[str, typer.Option("--model", "-m", help="Model name (see `forecast models`); default dlinear.")]
Horizon = Annotated[Optional[int], typer.Option("--horizon", "-H", help="Forecast horizon H.")]
SeqLen = Annotated[Optional[int], typer.Option("--seq-len", "-L", help="Lookback L.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed; default: the config's (2021 for the "
                                                       "linear models, 2023 otherwise).")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="32-true (default) or bf16-mixed: faster "
                                                                      "on GPUs and CPUs with native bfloat16.")]
Accelerator = Annotated[Optional[str], typer.Option("--accelerator", help="auto, cpu, gpu.")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Look for benchmark files here first.")]
Split = Annotated[Optional[str], typer.Option("--split", help="Train end and val end: two dates "
                                              "(2018-01-01,2018-03-01) or fractions (0.7,0.1); default: the "
                                              "papers' borders, 70/10/20 for a file.")]
Fill = Annotated[Optional[str], typer.Option("--fill", help="Fill empty cells and missing steps of your file (and "
                                            "align a long panel's series): ffill or interpolate; default: an error.")]
# What is forecast from what (forecast.data.roles).
Features = Annotated[Optional[str], typer.Option("--features", help="M (all columns), S (each target alone) or MS "
                                                 "(targets from covariates); default M, MS with a target or covariates.")]
Target = Annotated[Optional[str], typer.Option("--target", help="Column(s) to forecast, e.g. OT (default: the last).")]
PastCovariates = Annotated[Optional[str], typer.Option("--past-covariates", help="Columns observed up to the forecast "
                                                       "origin only (MS default: all the others).")]
FutureCovariates = Annotated[Optional[str], typer.Option("--future-covariates", help="Columns known over the horizon "
                                                         "too; 'calendar': the time features.")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Start over instead of resuming an interrupted run of the same "
                                     "config.")]
InitFrom = Annotated[Optional[str], typer.Option("--init-from", help="Fine-tune: start from this logged model "
                                                 "(models:/NAME@alias, runs:/ID/model or a folder).")]
RefitScaler = Annotated[bool, typer.Option("--refit-scaler", help="With --init-from: fit the scaler on the new train "
                                           "split (default: keep the parent's).")]
Force = Annotated[bool, typer.Option("--force", help="With --init-from and --register: register even if the parent's "
                                     "val loss is lower.")]
Level = Annotated[Optional[str], typer.Option("--level", help="Add conformal interval bounds, e.g. 80 or 80,90 "
                                              "(<col>_lo80, <col>_hi80).")]
Quantiles = Annotated[Optional[str], typer.Option("--quantiles", help="A quantile-trained model's levels to add, e.g. "
                                                  "0.1,0.9 (<col>_q0.1).")]
RollingFlag = Annotated[bool, typer.Option("--rolling", help="Forecast from every window; score vs actuals.")]
Adaptive = Annotated[bool, typer.Option("--adaptive", help="With --rolling: conformal intervals that adapt as the "
                                        "actuals arrive (online quantile tracking).")]
AdaptiveRate = Annotated[Optional[float], typer.Option("--adaptive-rate", help="With --adaptive: the step of each "
                                                       "interval's scale per actual (default 0.05).")]
Future = Annotated[Optional[Path], typer.Option("--future", help="The future covariates over the H steps after the "
                                                "input: date + those columns.")]
Experiment = Annotated[Optional[str], typer.Option("--experiment", help="MLflow experiment (default: dataset).")]


def overrides_of(sets: list[str] | None, **flags: object) -> dict:
    """``section.key`` overrides: the named flags that were given (``seq_len`` for ``--seq-len``; the keys are
    forecast.config.FLAGS and TRAIN_FLAGS), then ``--set``."""
    from forecast.config import FLAGS, TRAIN_FLAGS, parse_sets

    key_of = {flag[2:].replace("-", "_"): key for key, flag in {**FLAGS, **TRAIN_FLAGS}.items()}
    out = {key_of[name]: str(value) if isinstance(value, Path) else value for name, value in flags.items()
           if value is not None}
    out.update(parse_sets(sets or []))
    return out


def check_port(host: str, port: int) -> None:
    """``--port`` of serve and ui: one line now, rather than uvicorn's error after the model has loaded in every
    worker, or the MLflow UI's lines of log and its exit code 0."""
    if not 0 < port < 65536:
        raise ForecastError(f"--port {port} is not a TCP port; give 1..65535 (e.g. --port 5001).")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err.strerror})"
            raise ForecastError(f"port {port} on {host} {why}; pick another with --port, or --host.") from None


def exposure_warning(host: str) -> str | None:
    """The line a server bound beyond this machine prints (``--host 0.0.0.0`` and the like), or None on loopback."""
    if host == "localhost" or host.startswith("127.") or host in ("::1", "[::1]"):
        return None
    return (f"warning: --host {host} accepts requests from other machines, without authentication; "
            "keep 127.0.0.1 (the default) unless a proxy or firewall guards the port.")
