"""Forecasting with a saved model, from its MLflow artifact alone (no training data, no pickles).

A model artifact (logged by every ``forecast train`` run under ``model``; see :mod:`forecast.serving`) holds:

- ``model_state.pt``: the state dict, loaded with ``torch.load(weights_only=True)``;
- ``config.yaml``: the resolved run config (``RunConfig.to_dict()``);
- ``forecast_model.json``: the :class:`ModelMeta`: columns in order, scaler mean/std, frequency, L, H,
  the model name, the number of time-feature channels and the package version;
- ``orthotrans_q.npz``: OrthoTrans ``q_in``/``q_out`` when the model uses them (also in the state dict).

The flow of :func:`run_predict` is: read the input file, fetch the artifact and read its metadata, validate
the input against it (every check before any model work), build the model, forecast, write atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from forecast.data.loading import FILL_METHODS, Table, check_frequency, fill_missing, read_frame, to_table
from forecast.data.timefeatures import future_dates, time_features
from forecast.errors import ForecastError

META_FILE = "forecast_model.json"
STATE_FILE = "model_state.pt"
CONFIG_FILE = "config.yaml"
Q_FILE = "orthotrans_q.npz"
META_FORMAT = 1
DATE_COL = "date"
INPUT_SUFFIXES = (".csv", ".csv.gz", ".txt", ".parquet", ".pq")
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
LAYOUTS = ("wide", "long")


# --------------------------------------------------------------------------------------------------
# The artifact
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMeta:
    """What predicting needs besides the weights: the input schema, the scaler and the model's shape."""

    model_name: str
    seq_len: int  # L: rows of history one forecast reads
    horizon: int  # H: steps it forecasts
    columns: list[str]  # the variates, in the model's order
    mean: list[float]  # train-split scaler, per column
    std: list[float]
    freq: str  # pandas alias of the training data's step, e.g. "h", "15min", "W-TUE"
    n_marks: int  # time-feature channels fed to the model (0: none)
    forecast_version: str
    date_column: str = DATE_COL
    format: int = META_FORMAT
    mark_freq: str | None = None  # the step of the time features when not ``freq`` (data.mark_freq)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> ModelMeta:
        try:
            meta = cls(**doc)
        except TypeError as err:
            raise ForecastError(f"{where} is not a forecast model description ({err}).") from None
        if meta.format > META_FORMAT:
            raise ForecastError(f"{where} has format {meta.format}, newer than this forecast "
                                f"understands ({META_FORMAT}); upgrade forecast.")
        if not (len(meta.columns) == len(meta.mean) == len(meta.std)):
            raise ForecastError(f"{where}: columns, mean and std differ in length; the artifact is damaged.")
        return meta

    @property
    def n_vars(self) -> int:
        return len(self.columns)


@dataclass
class LoadedModel:
    """A forecaster rebuilt from an artifact, in eval mode on the CPU, with its metadata and config."""

    meta: ModelMeta
    model: torch.nn.Module
    config: dict[str, Any]
    source: str = ""

    @torch.no_grad()
    def forward_scaled(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        """``x [B, L, N]`` standardized -> ``[B, H, N]`` standardized."""
        return self.model(x, x_mark, y_mark)


def artifact_paths(model_dir: Path) -> dict[str, Path]:
    """``{name: path}`` of a model's files: an MLflow model directory (MLmodel) or a plain folder of them."""
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        doc = yaml.safe_load(mlmodel.read_text()) or {}
        arts = ((doc.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
        paths = {name: model_dir / spec["path"] for name, spec in arts.items() if isinstance(spec, dict)}
        if "meta" in paths:
            return paths
    if (model_dir / META_FILE).is_file():
        names = {"meta": META_FILE, "state": STATE_FILE, "config": CONFIG_FILE, "q": Q_FILE}
        return {k: model_dir / v for k, v in names.items() if (model_dir / v).is_file()}
    raise ForecastError(f"no forecast model in '{model_dir}' (no MLmodel with a '{META_FILE}' artifact); "
                        "give runs:/RUN_ID/model, models:/NAME@ALIAS or the folder of a logged model.")


def read_meta(paths: dict[str, Path]) -> ModelMeta:
    path = paths["meta"]
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ForecastError(f"{path} could not be read ({err}); the model artifact is damaged.") from None
    return ModelMeta.from_dict(doc, str(path))


def build_model(meta: ModelMeta, config: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The forecaster for ``meta``/``config`` with ``state`` loaded (strict), in eval mode."""
    from forecast.layers.orthotrans import extras_from_state_dict
    from forecast.models import ModelContext, build_config, create_model

    ctx = ModelContext(meta.seq_len, meta.horizon, meta.n_vars, meta.n_marks, extras_from_state_dict(state))
    model = create_model(meta.model_name, build_config(meta.model_name, config.get("model") or {}), ctx)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ForecastError(f"the saved weights do not fit a {meta.model_name} model ({first}); "
                            "the artifact was made by an incompatible forecast version.") from None
    return model.eval()


def load_from_paths(paths: dict[str, Path], source: str = "") -> LoadedModel:
    """Rebuild a :class:`LoadedModel` from an artifact's files (what the pyfunc's ``load_context`` calls)."""
    meta = read_meta(paths)
    for key in ("state", "config"):
        if key not in paths or not paths[key].is_file():
            raise ForecastError(f"the model artifact {source or paths['meta'].parent} has no {key} file; "
                                "it is incomplete.")
    config = yaml.safe_load(paths["config"].read_text()) or {}
    state = torch.load(paths["state"], map_location="cpu", weights_only=True)
    return LoadedModel(meta, build_model(meta, config, state), config, source)


@contextlib.contextmanager
def fluent_store(uri: str):
    """Point MLflow's fluent API at ``uri`` for a block, then restore the previous URI and environment."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def is_remote_uri(model_uri: str) -> bool:
    return "://" in model_uri or model_uri.startswith(("runs:/", "models:/"))


@contextlib.contextmanager
def model_files(model_uri: str, tracking_uri: str | None = None):
    """Yields the artifact's ``{name: path}``: a local folder as is, an MLflow URI downloaded to a temp dir."""
    path = Path(model_uri).expanduser()
    if path.exists():
        yield artifact_paths(path)
        return
    if not is_remote_uri(model_uri):
        raise ForecastError(f"model '{model_uri}' not found; give runs:/RUN_ID/model, models:/NAME@ALIAS "
                            "or the path of a model folder.")
    from forecast import tracking

    uri = tracking.resolve_uri(tracking_uri)
    tracking.quiet_logs()
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="forecast-model-") as tmp:
        try:
            # runs:/ID/model resolves to the run's logged model through the fluent store, so point it at uri too.
            with fluent_store(uri):
                local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp, tracking_uri=uri,
                                                            registry_uri=uri)
        except (MlflowException, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ForecastError(f"model '{model_uri}' could not be fetched from {uri} ({first}); check the run id "
                                "or name@alias with `forecast runs`, and --tracking-uri.") from None
        yield artifact_paths(Path(local))


def load_model(model_uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """The model at ``model_uri`` (``runs:/ID/model``, ``models:/NAME@alias`` or a local folder)."""
    with model_files(model_uri, tracking_uri) as paths:
        return load_from_paths(paths, model_uri)


# --------------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------------


def read_input(path: Path) -> pl.DataFrame:
    """The input table: an existing, non-empty CSV (optionally .gz) or parquet file."""
    name = str(path)
    lower = path.name.lower()
    if not lower.endswith(INPUT_SUFFIXES):
        raise ForecastError(f"{name} is not a CSV or parquet file (suffix '{path.suffix}'); "
                            "give a .csv or .parquet file with a date column and the model's columns.")
    if not path.is_file():
        raise ForecastError(f"input file '{name}' not found; give an existing CSV or parquet file.")
    if path.stat().st_size == 0:
        raise ForecastError(f"{name} is empty; give a CSV with a header row, a date column and the model's columns.")
    parquet = lower.endswith((".parquet", ".pq"))
    return read_frame(path if parquet else path.read_bytes() if not lower.endswith(".gz") else _gunzip(path), name)


def _gunzip(path: Path) -> bytes:
    import gzip

    try:
        return gzip.decompress(path.read_bytes())
    except OSError as err:
        raise ForecastError(f"{path} is not a gzip file ({err}); give a .csv, .csv.gz or .parquet file.") from None


def prepare_history(df: pl.DataFrame, meta: ModelMeta, name: str, fill: str | None = None,
                    min_rows: int | None = None) -> Table:
    """Validate ``df`` against the model's schema and return its values in the model's column order.

    Checks, in order, each a one-line :class:`ForecastError`: the date column; missing or extra columns
    (matched by name, any order); unparseable dates; non-numeric values; empty/NaN cells (unless ``fill``);
    duplicated or unsorted timestamps (unsorted input fails rather than being re-sorted silently); fewer than
    ``min_rows`` (default L) rows; a step that is not the model's frequency.
    """
    if fill is not None and fill not in FILL_METHODS:
        raise ForecastError(f"unknown --fill '{fill}'; use ffill or interpolate.")
    table = to_table(df, name, date_col=meta.date_column, allow_nan=fill is not None, columns=meta.columns)
    need = meta.seq_len if min_rows is None else min_rows
    if len(table.dates) < need:
        raise ForecastError(f"{name} has {len(table.dates)} rows but the model reads the last L={meta.seq_len}; "
                            f"give at least {need} rows of history.")
    check_frequency(table.dates, meta.freq, name)
    if fill is not None and not np.isfinite(table.values).all():
        table = Table(table.dates, fill_missing(table.values, table.columns, fill, name), table.columns)
    return table


def _scaled(meta: ModelMeta, values: np.ndarray) -> np.ndarray:
    """Standardize with the train scaler exactly as training does (float64 arithmetic, float32 result)."""
    return ((values - np.asarray(meta.mean)) / np.asarray(meta.std)).astype(np.float32)


def _marks(meta: ModelMeta, dates: np.ndarray) -> torch.Tensor | None:
    if meta.n_marks == 0:
        return None
    freq = meta.mark_freq or meta.freq
    marks = time_features(dates, freq)
    if marks.shape[1] != meta.n_marks:
        raise ForecastError(f"the model expects {meta.n_marks} time features at '{freq}' but this forecast "
                            f"version computes {marks.shape[1]}; use the forecast version that trained it.")
    return torch.from_numpy(marks)


def _check_horizon(meta: ModelMeta, horizon: int | None) -> int:
    if horizon is None:
        return meta.horizon
    if not 1 <= horizon <= meta.horizon:
        raise ForecastError(f"--horizon {horizon} is outside 1..{meta.horizon}; the model forecasts "
                            f"H={meta.horizon} steps, so ask for at most that many.")
    return horizon


# --------------------------------------------------------------------------------------------------
# Forecasting
# --------------------------------------------------------------------------------------------------


@dataclass
class Forecast:
    dates: np.ndarray  # [h] datetime64[ns]
    values: np.ndarray  # [h, N] float64, original units
    columns: list[str]


def forecast_next(lm: LoadedModel, table: Table, horizon: int | None = None) -> Forecast:
    """The next ``horizon`` (default H) steps after the last L rows of ``table``, in original units."""
    meta = lm.meta
    h = _check_horizon(meta, horizon)
    L = meta.seq_len
    hist_dates = table.dates[-L:]
    fut = future_dates(table.dates[-1], meta.freq, meta.horizon).astype("datetime64[ns]")
    x = torch.from_numpy(_scaled(meta, table.values[-L:]))[None]
    x_mark = _marks(meta, hist_dates)
    y_mark = _marks(meta, fut)
    pred = lm.forward_scaled(x, None if x_mark is None else x_mark[None], None if y_mark is None else y_mark[None])
    values = pred[0, :h].double().numpy() * np.asarray(meta.std) + np.asarray(meta.mean)
    return Forecast(fut[:h], values, list(meta.columns))


@dataclass
class Rolling:
    """Forecasts from every stride-1 window of an input, and metrics where the actuals are present."""

    origins: np.ndarray  # [W] datetime64: the last observed timestamp of each window
    dates: np.ndarray  # [W, h] datetime64: the forecast timestamps
    values: np.ndarray | None  # [W, h, N] float64 original units (None when not kept)
    columns: list[str]
    windows: int  # W = T - L + 1
    scored_windows: int  # windows whose h actuals are all in the input
    metrics: dict[str, float] = field(default_factory=dict)


def rolling_forecast(lm: LoadedModel, table: Table, horizon: int | None = None, batch_size: int | None = None,
                     keep: bool = True) -> Rolling:
    """Forecast from every stride-1 window of ``table`` in batches (one gather per batch, no per-window loop).

    The input is padded with the H future timestamps (values NaN), so the last window's forecast runs past the
    data. Windows whose first ``h`` targets lie in the input are scored exactly like training's test metrics:
    MSE/MAE over all their cells on the standardized scale and in original units.
    """
    from forecast.data.windows import WindowDataset, batch_sampler

    meta = lm.meta
    h = _check_horizon(meta, horizon)
    L, H, N = meta.seq_len, meta.horizon, meta.n_vars
    T = len(table.dates)
    fut = future_dates(table.dates[-1], meta.freq, H).astype("datetime64[ns]")
    all_dates = np.concatenate([table.dates.astype("datetime64[ns]"), fut])
    values = np.concatenate([_scaled(meta, table.values), np.full((H, N), np.nan, np.float32)])
    marks = _marks(meta, all_dates)
    ds = WindowDataset(torch.from_numpy(values), marks, 0, T + H, L, H)
    n_windows, n_scored = len(ds), max(T - L - h + 1, 0)
    size = batch_size or int((lm.config.get("train") or {}).get("eval_batch_size", 256))
    out = np.empty((n_windows, h, N), np.float32) if keep else None
    std32 = torch.as_tensor(meta.std, dtype=torch.float32)
    sums = torch.zeros(4, dtype=torch.float64)  # sse, sae, sse_orig, sae_orig
    for idx in batch_sampler(ds, size, shuffle=False):
        batch = ds[idx]
        pred = lm.forward_scaled(batch["x"], batch.get("x_mark"), batch.get("y_mark"))[:, :h]
        if out is not None:
            out[idx[0]: idx[-1] + 1] = pred.numpy()
        k = min(len(idx), max(n_scored - idx[0], 0))  # windows of this (ordered) batch with actuals
        if k:
            err = pred[:k] - batch["y"][:k, :h]
            err_orig = err * std32
            sums += torch.stack([err.double().pow(2).sum(), err.double().abs().sum(),
                                 err_orig.double().pow(2).sum(), err_orig.double().abs().sum()])
    metrics: dict[str, float] = {}
    if n_scored:
        n = float(n_scored * h * N)
        sse, sae, sse_o, sae_o = (float(v) / n for v in sums)
        metrics = {"mse": sse, "mae": sae, "mse_orig": sse_o, "mae_orig": sae_o, "windows": float(n_scored)}
    target = np.arange(n_windows)[:, None] + L + np.arange(h)[None, :]
    forecasts = None
    if out is not None:
        forecasts = out.astype(np.float64) * np.asarray(meta.std) + np.asarray(meta.mean)
    return Rolling(all_dates[L - 1: L - 1 + n_windows], all_dates[target], forecasts, list(meta.columns),
                   n_windows, n_scored, metrics)


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def forecast_frame(fc: Forecast, layout: str = "wide") -> pl.DataFrame:
    """Wide: ``date`` + one column per variate. Long: ``variable, date, value``, variable by variable."""
    if layout == "wide":
        return pl.DataFrame({DATE_COL: fc.dates, **{c: fc.values[:, j] for j, c in enumerate(fc.columns)}})
    h, n = fc.values.shape
    return pl.DataFrame({
        "variable": np.repeat(np.asarray(fc.columns, dtype=object), h).tolist(),
        DATE_COL: np.tile(fc.dates, n),
        "value": fc.values.T.reshape(-1),
    })


def rolling_frame(rl: Rolling, layout: str = "wide") -> pl.DataFrame:
    """Wide: ``origin, date, step`` + the variates. Long: ``origin, date, step, variable, value``."""
    assert rl.values is not None
    W, h, n = rl.values.shape
    origin = np.repeat(rl.origins, h)
    dates = rl.dates.reshape(-1)
    step = np.tile(np.arange(1, h + 1, dtype=np.int32), W)
    if layout == "wide":
        flat = rl.values.reshape(W * h, n)
        return pl.DataFrame({"origin": origin, DATE_COL: dates, "step": step,
                             **{c: flat[:, j] for j, c in enumerate(rl.columns)}})
    return pl.DataFrame({
        "origin": np.repeat(origin, n), DATE_COL: np.repeat(dates, n), "step": np.repeat(step, n),
        "variable": np.tile(np.asarray(rl.columns, dtype=object), W * h).tolist(),
        "value": rl.values.reshape(-1),
    })


def output_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the output's suffix; checked before any work is done."""
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ForecastError(f"--output '{path}' must end in .csv or .parquet.")
    if not path.parent.resolve().is_dir():
        raise ForecastError(f"--output folder '{path.parent}' does not exist; create it first.")
    return fmt


def write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write CSV or parquet to a temp file beside ``path`` and rename it into place: never a partial file."""
    fmt = output_format(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            frame.write_csv(tmp, datetime_format="%Y-%m-%d %H:%M:%S", float_precision=None)
        else:
            frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_thread():
    """One intra-op thread for a block. A single window is a handful of tiny ops: torch's parallel regions only
    add overhead there, and stall for milliseconds per op when another process holds a core."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


@dataclass
class PredictResult:
    meta: ModelMeta
    frame: pl.DataFrame | None  # the written/printable forecast (None for --rolling without --output)
    rolling: Rolling | None
    output: Path | None
    timings: dict[str, float]  # seconds: load (fetch + build), forecast (validate + run + write)
    rows_in: int
    warnings: list[str] = field(default_factory=list)


def run_predict(model_uri: str, input_path: Path, output: Path | None = None, horizon: int | None = None,
                layout: str = "wide", fill: str | None = None, rolling: bool = False,
                tracking_uri: str | None = None, batch_size: int | None = None) -> PredictResult:
    """``forecast predict``: every input check runs before the model is built; the output is written atomically."""
    import forecast

    if layout not in LAYOUTS:
        raise ForecastError(f"--format '{layout}' is not one of {', '.join(LAYOUTS)}.")
    if fill is not None and fill not in FILL_METHODS:
        raise ForecastError(f"unknown --fill '{fill}'; use ffill or interpolate.")
    if output is not None:
        output_format(output)
    t0 = time.perf_counter()
    df = read_input(input_path)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    with model_files(model_uri, tracking_uri) as paths:
        meta = read_meta(paths)
        t_fetch = time.perf_counter() - t1
        t2 = time.perf_counter()
        h = _check_horizon(meta, horizon)
        table = prepare_history(df, meta, str(input_path), fill)
        t_validate = time.perf_counter() - t2
        t3 = time.perf_counter()
        lm = load_from_paths(paths, model_uri)
    t_build = time.perf_counter() - t3
    warnings = []
    if meta.forecast_version != forecast.__version__:
        warnings.append(f"the model was saved by forecast {meta.forecast_version}, this is {forecast.__version__}.")
    t4 = time.perf_counter()
    rl = None
    if rolling:
        rl = rolling_forecast(lm, table, h, batch_size, keep=output is not None)
        frame = rolling_frame(rl, layout) if output is not None else None
    else:
        with single_thread():
            frame = forecast_frame(forecast_next(lm, table, h), layout)
    if output is not None and frame is not None:
        write_atomic(frame, output)
    t_run = time.perf_counter() - t4
    timings = {"read_input": t_read, "fetch": t_fetch, "validate": t_validate, "build": t_build,
               "load": t_fetch + t_build, "forecast": t_read + t_validate + t_run, "run": t_run}
    return PredictResult(meta, frame, rl, output, timings, len(table.dates), warnings)
