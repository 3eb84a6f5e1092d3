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
from forecast.data.timefeatures import future_dates
from forecast.errors import ForecastError
from forecast.inference.fetch import model_dir
from forecast.inference.io import (
    LAYOUTS,
    Forecast,
    Rolling,
    check_adaptive,
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
    source_name,
    write_atomic,
)
from forecast.inference.rolling import rolling_forecast
from forecast.inference.tensors import future_covariates, marks, original_units, scaled, steps
from forecast.process import resume_gc


@contextlib.contextmanager
def model_files(model_uri: str, tracking_uri: str | None = None) -> Iterator[dict[str, Path]]:
    """Yields the artifact's ``{name: path}`` (see :func:`model_dir`)."""
    with model_dir(model_uri, tracking_uri) as local:
        yield artifact.artifact_paths(local)


def load_model(model_uri: str, tracking_uri: str | None = None) -> LoadedModel:
    """The model at ``model_uri`` (``runs:/ID/model``, ``models:/NAME@alias`` or a local folder)."""
    with model_files(model_uri, tracking_uri) as paths:
        return artifact.load(paths, model_uri)


def forecast_next(lm: LoadedModel, table: Table, horizon: int | None = None,
                  levels: tuple[float, ...] = (), quantiles: tuple[float, ...] = (),
                  future: np.ndarray | None = None) -> Forecast:
    """The next ``horizon`` (default H) steps of the targets after the last L rows of ``table``, in original units,
    with the conformal interval of each of ``levels`` (calibrated ones: :func:`forecast.inference.io.parse_levels`).
    ``future [H, n_f]``: the future covariates over the H steps (checked by :func:`~forecast.inference.io.prepare_future`).
    """
    meta = lm.meta
    h = steps(meta, horizon)
    L, k = meta.seq_len, meta.n_inputs
    hist = table.values[-L:]
    fut = future_dates(table.dates[-1], meta.freq, meta.horizon).astype("datetime64[ns]")
    x = torch.from_numpy(scaled(meta, hist[:, :k]))[None]
    x_mark, y_mark = marks(meta, table.dates[-L:]), marks(meta, fut)
    rows = np.concatenate([hist[:, k:], future if future is not None else np.empty((meta.horizon, meta.n_vars - k))])
    covariates = future_covariates(meta, np.concatenate([table.dates[-L:].astype("datetime64[ns]"), fut]), rows)
    full = lm.forward_scaled(x, None if x_mark is None else x_mark[None], None if y_mark is None else y_mark[None],
                             full=True, future=None if covariates is None else covariates[None])
    pred = full if full.dim() == 3 else full[..., lm.quantiles.index(0.5)]
    values = original_units(meta, pred[0, :h].numpy())
    by_level = {q: original_units(meta, full[0, :h, :, lm.quantiles.index(q)].numpy()) for q in quantiles}
    bounds = {}
    if levels:
        calibrated, widths = lm.intervals
        for level in levels:
            half = widths[calibrated.index(level), :h].astype(np.float64) * np.asarray(meta.std)[:meta.n_targets]
            bounds[level] = (values - half, values + half)
    return Forecast(fut[:h], values, meta.target_columns, bounds, by_level)


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
                quantiles: str | None = None, future_path: Path | None = None,
                adaptive: float | None = None) -> PredictResult:
    """``forecast predict``: every input check runs before the model is built; the output is written atomically.
    ``future_path``: the future covariates over the H steps after the input (``--future``); ``adaptive``: with
    ``rolling``, the rate of intervals that adapt as the actuals arrive (``--adaptive``)."""
    if layout not in LAYOUTS:
        raise ForecastError(f"--format '{layout}' is not one of {', '.join(LAYOUTS)}.")
    check_fill(fill)
    check_adaptive(adaptive, rolling)
    if output is not None:
        output_format(output)
    t0 = time.perf_counter()
    df = read_input(input_path)
    future_df = read_input(future_path) if future_path is not None else None
    long = is_long(df.columns)  # unique_id, ds, y in: the same shape out
    if long:
        df = to_wide(df, source_name(input_path), align=fill is not None)
    t_read = time.perf_counter() - t0
    t1 = time.perf_counter()
    with model_files(model_uri, tracking_uri) as paths:
        meta = artifact.read_meta(paths)
        t_fetch = time.perf_counter() - t1
        t2 = time.perf_counter()
        h = meta.check_horizon(horizon)
        table = prepare_history(df, meta, source_name(input_path), fill)
        # --rolling without --future forecasts the windows whose horizon lies in the input, covariates and all
        future = None if rolling and future_df is None else prepare_future(future_df, meta, table.dates[-1],
                                                                             source_name(future_path))
        t_validate = time.perf_counter() - t2
        t3 = time.perf_counter()
        lm = artifact.load(paths, model_uri)
        levels = parse_levels(level, lm.intervals[0] if lm.intervals else None)
        qs = parse_quantiles(quantiles, lm.quantiles)
        if qs and rolling:
            raise ForecastError("--quantiles is for the next forecast; --rolling scores the point forecast and the "
                                "conformal intervals (--level), so drop one of them.")
        if adaptive is not None and not lm.intervals:
            raise ForecastError("--adaptive adapts the model's conformal intervals, and it has none (trained with "
                                "train.intervals: []); retrain it with intervals or drop --adaptive.")
    t_build = time.perf_counter() - t3
    resume_gc()  # start-up is over: the model is built (forecast.process)
    warnings = []
    if meta.forecast_version != forecast.__version__:
        warnings.append(f"the model was saved by forecast {meta.forecast_version}, this is {forecast.__version__}.")
    t4 = time.perf_counter()
    rl = None
    if rolling:
        rl = rolling_forecast(lm, table, h, batch_size, output is not None, future, levels, adaptive)
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
