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


def _steps(meta: ModelMeta, horizon: int | None) -> int:
    """The steps to forecast; ``horizon`` was checked against the model once, where the user gave it."""
    h = meta.horizon if horizon is None else horizon
    assert 1 <= h <= meta.horizon, f"horizon {h} not checked against H={meta.horizon}"
    return h


def forecast_next(lm: LoadedModel, table: Table, horizon: int | None = None,
                  levels: tuple[float, ...] = (), quantiles: tuple[float, ...] = ()) -> Forecast:
    """The next ``horizon`` (default H) steps after the last L rows of ``table``, in original units, with the
    conformal interval of each of ``levels`` (calibrated ones: :func:`forecast.inference.io.parse_levels`)."""
    meta = lm.meta
    h = _steps(meta, horizon)
    L = meta.seq_len
    hist_dates = table.dates[-L:]
    fut = future_dates(table.dates[-1], meta.freq, meta.horizon).astype("datetime64[ns]")
    x = torch.from_numpy(_scaled(meta, table.values[-L:]))[None]
    x_mark = _marks(meta, hist_dates)
    y_mark = _marks(meta, fut)
    full = lm.forward_scaled(x, None if x_mark is None else x_mark[None], None if y_mark is None else y_mark[None],
                             full=True)
    pred = full if full.dim() == 3 else full[..., lm.quantiles.index(0.5)]
    values = pred[0, :h].double().numpy() * np.asarray(meta.std) + np.asarray(meta.mean)
    by_level = {q: full[0, :h, :, lm.quantiles.index(q)].double().numpy() * np.asarray(meta.std)
                + np.asarray(meta.mean) for q in quantiles}
    bounds = {}
    if levels:
        calibrated, widths = lm.intervals
        for level in levels:
            half = widths[calibrated.index(level), :h].astype(np.float64) * np.asarray(meta.std)
            bounds[level] = (values - half, values + half)
    return Forecast(fut[:h], values, list(meta.columns), bounds, by_level)


def rolling_forecast(lm: LoadedModel, table: Table, horizon: int | None = None, batch_size: int | None = None,
                     keep: bool = True) -> Rolling:
    """Forecast from every stride-1 window of ``table`` in batches (one gather per batch, no per-window loop).

    The input is padded with the H future timestamps (values NaN), so the last window's forecast runs past the
    data. Windows whose first ``h`` targets lie in the input are scored exactly like training's test metrics:
    MSE/MAE over all their cells on the standardized scale and in original units.
    """
    meta = lm.meta
    h = _steps(meta, horizon)
    L, H, N = meta.seq_len, meta.horizon, meta.n_vars
    T = len(table.dates)
    fut = future_dates(table.dates[-1], meta.freq, H).astype("datetime64[ns]")
    all_dates = np.concatenate([table.dates.astype("datetime64[ns]"), fut])
    values = np.concatenate([_scaled(meta, table.values), np.full((H, N), np.nan, np.float32)])
    marks = _marks(meta, all_dates)
    ds = WindowDataset(torch.from_numpy(values), marks, 0, T + H, L, H)
    n_windows, n_scored = len(ds), max(window_count(0, T, L, h), 0)
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
                quantiles: str | None = None) -> PredictResult:
    """``forecast predict``: every input check runs before the model is built; the output is written atomically."""
    if layout not in LAYOUTS:
        raise ForecastError(f"--format '{layout}' is not one of {', '.join(LAYOUTS)}.")
    check_fill(fill)
    if output is not None:
        output_format(output)
    t0 = time.perf_counter()
    df = read_input(input_path)
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
        rl = rolling_forecast(lm, table, h, batch_size, keep=output is not None)
        frame = rolling_frame(rl, "long" if long else layout) if output is not None else None
        if long and frame is not None:
            frame = frame.rename({"variable": ID, "date": TIME, "value": TARGET})
    else:
        with single_thread():
            fc = forecast_next(lm, table, h, levels, qs)
        frame = panel_frame(fc) if long else forecast_frame(fc, layout)
    if output is not None and frame is not None:
        write_atomic(frame, output)
    t_run = time.perf_counter() - t4
    timings = {"read_input": t_read, "fetch": t_fetch, "validate": t_validate, "build": t_build,
               "load": t_fetch + t_build, "forecast": t_read + t_validate + t_run, "run": t_run}
    return PredictResult(meta, frame, rl, output, timings, len(table.dates), warnings)
