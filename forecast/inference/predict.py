"""Forecasting with a saved model, from its artifact alone (no training data, no pickles).

The flow of :func:`run_predict` is: read the input file, fetch the artifact and read its metadata, validate
the input against it (every check before any model work), build the model, forecast, write atomically.
The artifact's format is :mod:`forecast.artifact`'s; the input and output files are :mod:`forecast.inference.io`'s.
MLflow is imported only to fetch a ``runs:/`` or ``models:/`` URI, Lightning never.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

import forecast
from forecast import artifact
from forecast.artifact import LoadedModel, ModelMeta
from forecast.data.loading import Table
from forecast.data.panel import ID, TARGET, TIME, is_long, to_wide
from forecast.data.timefeatures import future_dates, time_features
from forecast.data.windows import WindowDataset, batch_sampler, window_count
from forecast.errors import ForecastError
from forecast.inference.fetch import model_dir
from forecast.inference.io import (
    LAYOUTS,
    Forecast,
    Rolling,
    check_fill,
    forecast_frame,
    output_format,
    panel_frame,
    parse_levels,
    parse_quantiles,
    prepare_future,
    prepare_history,
    read_input,
    rolling_frame,
    write_atomic,
)


@contextlib.contextmanager
def model_files(model_uri: str, tracking_uri: str | None = None) -> Iterator[dict[str, Path]]:
    """Yields the artifact's ``{name: path}`` (see :func:`model_dir`)."""
    with model_dir(model_uri, tracking_uri) as local:
        yield artifact.artifact_paths(local)


def load_model(model_uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """The model at ``model_uri`` (``runs:/ID/model``, ``models:/NAME@alias`` or a local folder)."""
    with model_files(model_uri, tracking_uri) as paths:
        return artifact.load(paths, model_uri)


def _scaled(meta: ModelMeta, values: np.ndarray, first: int = 0) -> np.ndarray:
    """Standardize columns ``first, first + 1, ...`` of the model with the train scaler exactly as training does
    (float64 arithmetic, float32 result)."""
    cols = slice(first, first + values.shape[1])
    return ((values - np.asarray(meta.mean)[cols]) / np.asarray(meta.std)[cols]).astype(np.float32)


def _marks(meta: ModelMeta, dates: np.ndarray, n: int | None = None) -> torch.Tensor | None:
    n = meta.n_marks if n is None else n
    if n == 0:
        return None
    freq = meta.mark_freq or meta.freq
    marks = time_features(dates, freq)
    if marks.shape[1] != n:
        raise ForecastError(f"the model expects {n} time features at '{freq}' but this forecast "
                            f"version computes {marks.shape[1]}; use the forecast version that trained it.")
    return torch.from_numpy(marks)


def _future(meta: ModelMeta, dates: np.ndarray, values: np.ndarray) -> torch.Tensor | None:
    """``[T, F]``: the future-covariate columns ``values [T, n_f]`` (original units) standardized, then the
    calendar of ``dates``; None for a model without future covariates."""
    if not meta.n_future:
        return None
    parts = [torch.from_numpy(_scaled(meta, values, meta.n_inputs))] if meta.future_columns else []
    calendar = _marks(meta, dates, meta.n_calendar)
    return torch.cat(parts + ([calendar] if calendar is not None else []), dim=1)


def _targets(meta: ModelMeta, scaled: np.ndarray) -> np.ndarray:
    """``[..., N_t]`` standardized forecasts of the targets in original units (float64)."""
    n = meta.n_targets
    return scaled.astype(np.float64) * np.asarray(meta.std)[:n] + np.asarray(meta.mean)[:n]


def _steps(meta: ModelMeta, horizon: int | None) -> int:
    """The steps to forecast; ``horizon`` was checked against the model once, where the user gave it."""
    h = meta.horizon if horizon is None else horizon
    assert 1 <= h <= meta.horizon, f"horizon {h} not checked against H={meta.horizon}"
    return h


def forecast_next(lm: LoadedModel, table: Table, horizon: int | None = None,
                  levels: tuple[float, ...] = (), quantiles: tuple[float, ...] = (),
                  future: np.ndarray | None = None) -> Forecast:
    """The next ``horizon`` (default H) steps of the targets after the last L rows of ``table``, in original units,
    with the conformal interval of each of ``levels`` (calibrated ones: :func:`forecast.inference.io.parse_levels`).
    ``future [H, n_f]``: the future covariates over the H steps (checked by :func:`~forecast.inference.io.prepare_future`).
    """
    meta = lm.meta
    h = _steps(meta, horizon)
    L, k = meta.seq_len, meta.n_inputs
    hist = table.values[-L:]
    fut = future_dates(table.dates[-1], meta.freq, meta.horizon).astype("datetime64[ns]")
    x = torch.from_numpy(_scaled(meta, hist[:, :k]))[None]
    x_mark, y_mark = _marks(meta, table.dates[-L:]), _marks(meta, fut)
    rows = np.concatenate([hist[:, k:], future if future is not None else np.empty((meta.horizon, meta.n_vars - k))])
    covariates = _future(meta, np.concatenate([table.dates[-L:].astype("datetime64[ns]"), fut]), rows)
    full = lm.forward_scaled(x, None if x_mark is None else x_mark[None], None if y_mark is None else y_mark[None],
                             full=True, future=None if covariates is None else covariates[None])
    pred = full if full.dim() == 3 else full[..., lm.quantiles.index(0.5)]
    values = _targets(meta, pred[0, :h].numpy())
    by_level = {q: _targets(meta, full[0, :h, :, lm.quantiles.index(q)].numpy()) for q in quantiles}
    bounds = {}
    if levels:
        calibrated, widths = lm.intervals
        for level in levels:
            half = widths[calibrated.index(level), :h].astype(np.float64) * np.asarray(meta.std)[:meta.n_targets]
            bounds[level] = (values - half, values + half)
    return Forecast(fut[:h], values, meta.target_columns, bounds, by_level)


def rolling_forecast(lm: LoadedModel, table: Table, horizon: int | None = None, batch_size: int | None = None,
                     keep: bool = True, future: np.ndarray | None = None) -> Rolling:
    """Forecast from every stride-1 window of ``table`` in batches (one gather per batch, no per-window loop).

    The input is padded with the H future timestamps (values NaN), so the last window's forecast runs past the
    data; a model with future covariates reads them there from ``future [H, n_f]``, and without it only the windows
    whose horizon lies in the input are forecast. Windows whose first ``h`` targets lie in the input are scored
    exactly like training's test metrics: MSE/MAE over all their cells on the standardized scale and in original
    units.
    """
    meta = lm.meta
    h = _steps(meta, horizon)
    L, H, k = meta.seq_len, meta.horizon, meta.n_inputs
    T = len(table.dates)
    pad = H if (future is not None or not meta.future_columns) else 0
    if T + pad < L + H:
        raise ForecastError(f"--rolling without --future needs L + H = {L + H} rows for a model with future "
                            f"covariates, the input has {T}; give more history or --future.")
    fut = future_dates(table.dates[-1], meta.freq, H).astype("datetime64[ns]")[:pad]
    all_dates = np.concatenate([table.dates.astype("datetime64[ns]"), fut])
    values = np.concatenate([_scaled(meta, table.values[:, :k]), np.full((pad, k), np.nan, np.float32)])
    rows = np.concatenate([table.values[:, k:], future if future is not None else np.empty((pad, meta.n_vars - k))])
    ds = WindowDataset(torch.from_numpy(values), _marks(meta, all_dates), 0, T + pad, L, H, meta.n_targets,
                       _future(meta, all_dates, rows))
    n_windows, n_scored = len(ds), max(window_count(0, T, L, h), 0)
    size = batch_size or int((lm.config.get("train") or {}).get("eval_batch_size", 256))
    out = np.empty((n_windows, h, meta.n_targets), np.float32) if keep else None
    std32 = torch.as_tensor(meta.std[:meta.n_targets], dtype=torch.float32)
    sums = torch.zeros(4, dtype=torch.float64)  # sse, sae, sse_orig, sae_orig
    for idx in batch_sampler(ds, size, shuffle=False):
        batch = ds[idx]
        pred = lm.forward_scaled(batch["x"], batch.get("x_mark"), batch.get("y_mark"),
                                 future=batch.get("future"))[:, :h]
        if out is not None:
            out[idx[0]: idx[-1] + 1] = pred.numpy()
        n_in = min(len(idx), max(n_scored - idx[0], 0))  # windows of this (ordered) batch with actuals
        if n_in:
            err = pred[:n_in] - batch["y"][:n_in, :h]
            err_orig = err * std32
            sums += torch.stack([err.double().pow(2).sum(), err.double().abs().sum(),
                                 err_orig.double().pow(2).sum(), err_orig.double().abs().sum()])
    metrics: dict[str, float] = {}
    if n_scored:
        n = float(n_scored * h * meta.n_targets)
        sse, sae, sse_o, sae_o = (float(v) / n for v in sums)
        metrics = {"mse": sse, "mae": sae, "mse_orig": sse_o, "mae_orig": sae_o, "windows": float(n_scored)}
    target = np.arange(n_windows)[:, None] + L + np.arange(h)[None, :]
    forecasts = None if out is None else _targets(meta, out)
    return Rolling(all_dates[L - 1: L - 1 + n_windows], all_dates[target], forecasts, meta.target_columns,
                   n_windows, n_scored, metrics)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
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
                tracking_uri: str | None = None, batch_size: int | None = None, level: str | None = None,
                quantiles: str | None = None, future_path: Path | None = None) -> PredictResult:
    """``forecast predict``: every input check runs before the model is built; the output is written atomically.
    ``future_path``: the future covariates over the H steps after the input (``--future``)."""
    if layout not in LAYOUTS:
        raise ForecastError(f"--format '{layout}' is not one of {', '.join(LAYOUTS)}.")
    check_fill(fill)
    if output is not None:
        output_format(output)
    t0 = time.perf_counter()
    df = read_input(input_path)
    future_df = read_input(future_path) if future_path is not None else None
    long = is_long(df.columns)  # unique_id, ds, y in: the same shape out
    if long:
        df = to_wide(df, str(input_path), align=fill is not None)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    with model_files(model_uri, tracking_uri) as paths:
        meta = artifact.read_meta(paths)
        t_fetch = time.perf_counter() - t1
        t2 = time.perf_counter()
        h = meta.check_horizon(horizon)
        table = prepare_history(df, meta, str(input_path), fill)
        # --rolling without --future forecasts the windows whose horizon lies in the input, covariates and all
        future = None if rolling and future_df is None else prepare_future(future_df, meta, table.dates[-1],
                                                                             str(future_path))
        t_validate = time.perf_counter() - t2
        t3 = time.perf_counter()
        lm = artifact.load(paths, model_uri)
        levels = parse_levels(level, lm.intervals[0] if lm.intervals else None)
        qs = parse_quantiles(quantiles, lm.quantiles)
        if (levels or qs) and rolling:
            raise ForecastError("--level and --quantiles are for the next forecast; --rolling scores points only, "
                                "so drop one of them.")
    t_build = time.perf_counter() - t3
    warnings = []
    if meta.forecast_version != forecast.__version__:
        warnings.append(f"the model was saved by forecast {meta.forecast_version}, this is {forecast.__version__}.")
    t4 = time.perf_counter()
    rl = None
    if rolling:
        rl = rolling_forecast(lm, table, h, batch_size, keep=output is not None, future=future)
        frame = rolling_frame(rl, "long" if long else layout) if output is not None else None
        if long and frame is not None:
            frame = frame.rename({"variable": ID, "date": TIME, "value": TARGET})
    else:
        with single_thread():
            fc = forecast_next(lm, table, h, levels, qs, future)
        frame = panel_frame(fc) if long else forecast_frame(fc, layout)
    if output is not None and frame is not None:
        write_atomic(frame, output)
    t_run = time.perf_counter() - t4
    timings = {"read_input": t_read, "fetch": t_fetch, "validate": t_validate, "build": t_build,
               "load": t_fetch + t_build, "forecast": t_read + t_validate + t_run, "run": t_run}
    return PredictResult(meta, frame, rl, output, timings, len(table.dates), warnings)
