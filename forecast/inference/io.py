"""What ``forecast predict`` reads and writes: the input file checked against the model, the output frames, and
atomic writes. Every check is one line (a :class:`~forecast.errors.ForecastError`) before any model work."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from forecast.artifact import DATE_COL, ModelMeta
from forecast.conformal import level_name
from forecast.data.panel import ID, TARGET, TIME
from forecast.data.gaps import FILL_METHODS, check_frequency, fill_gaps
from forecast.data.loading import Table, read_bytes, read_frame, read_piped, to_table
from forecast.data.timefeatures import future_dates
from forecast.errors import ForecastError, writable_folder
from forecast.process import atomic_path

INPUT_SUFFIXES = (".csv", ".csv.gz", ".txt", ".parquet", ".pq")
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LAYOUTS = ("wide", "long")


def check_fill(fill: str | None, name: str = "--fill") -> None:
    """``name`` is what the user typed: the flag, or the pyfunc's ``params.fill``."""
    if fill is not None and fill not in FILL_METHODS:
        raise ForecastError(f"unknown {name} '{fill}'; use ffill or interpolate.")


def check_adaptive(rate: float | None, rolling: bool) -> None:
    """``--adaptive RATE``: a step in (0, 1], and only for a rolling forecast (it needs actuals to adapt to)."""
    if rate is None:
        return
    if not rolling:
        raise ForecastError("--adaptive needs --rolling: intervals adapt to the actuals of a rolling forecast; "
                            "add --rolling or drop --adaptive.")
    if not 0 < rate <= 1:
        raise ForecastError(f"--adaptive-rate {rate:g} is outside (0, 1]; the default is 0.05 (a miss widens an "
                            "interval by 5% of its width).")


@dataclass
class Forecast:
    dates: np.ndarray  # [h] datetime64[ns]
    values: np.ndarray  # [h, N] float64, original units
    columns: list[str]
    bounds: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # level -> (lo, hi) [h, N]
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)  # level -> [h, N] (quantile-trained models)


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
    bounds: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # level -> (lo, hi) [W, h, N]


STDIO = "-"  # --input - reads the table from stdin, --output - writes CSV to stdout (for pipes and cron jobs)


def source_name(path: Path) -> str:
    """How messages name an input: its path, or ``stdin``."""
    return "stdin" if str(path) == STDIO else str(path)


def read_input(path: Path) -> pl.DataFrame:
    """The input table: an existing, non-empty CSV (optionally .gz) or parquet file, or stdin for ``-``."""
    name = str(path)
    if name == STDIO:
        return read_piped(sys.stdin.buffer.read(), "stdin")
    lower = path.name.lower()
    if not lower.endswith(INPUT_SUFFIXES):
        raise ForecastError(f"{name} is not a CSV or parquet file (suffix '{path.suffix}'); "
                            "give a .csv or .parquet file with a date column and the model's columns.")
    if not path.is_file():
        raise ForecastError(f"input file '{name}' not found; give an existing CSV or parquet file.")
    if path.stat().st_size == 0:
        raise ForecastError(f"{name} is empty; give a CSV with a header row, a date column and the model's columns.")
    parquet = lower.endswith((".parquet", ".pq"))
    return read_frame(path if parquet else read_bytes(path), name)


def prepare_history(df: pl.DataFrame, meta: ModelMeta, name: str, fill: str | None = None,
                    min_rows: int | None = None) -> Table:
    """Validate ``df`` against the model's schema and return its values in the model's column order.

    Checks, in order, each a one-line :class:`ForecastError`: the date column; missing or extra columns
    (matched by name, any order); unparseable dates; non-numeric values; empty/NaN cells (unless ``fill``);
    duplicated or unsorted timestamps (unsorted input fails rather than being re-sorted silently); fewer than
    ``min_rows`` (default L) rows; a step that is not the model's frequency.
    """
    check_fill(fill)
    unused = [c for c in meta.ignored_columns or [] if c in df.columns]  # in the training file, read by no role
    if unused:
        df = df.drop(unused)
    table = to_table(df, name, date_col=meta.date_column, allow_nan=fill is not None, columns=meta.columns)
    need = meta.seq_len if min_rows is None else min_rows
    if len(table.dates) < need:
        raise ForecastError(f"{name} has {len(table.dates)} rows but the model reads the last L={meta.seq_len}; "
                            f"give at least {need} rows of history.")
    if fill is not None:
        table = fill_gaps(table, meta.freq, fill, name)
    check_frequency(table.dates, meta.freq, name)
    return table


def _stamp(when: Any) -> str:
    return str(np.datetime64(when, "m")).replace("T", " ")


def future_hint(meta: ModelMeta, last: np.datetime64) -> str:
    """``the 96 rows from 2018-06-23 00:00 to 2018-06-26 23:00 ('h' steps)``: what ``--future`` must hold."""
    want = future_dates(last, meta.freq, meta.horizon)
    return f"the {meta.horizon} rows from {_stamp(want[0])} to {_stamp(want[-1])} ('{meta.freq}' steps)"


def prepare_future(df: pl.DataFrame | None, meta: ModelMeta, last: np.datetime64, name: str,
                   flag: str = "--future FILE") -> np.ndarray | None:
    """The future covariates ``[H, F]`` (original units, the model's order) over exactly the H steps after the
    history's last timestamp ``last``; None for a model without them. Every mismatch is one line: no file, a file
    for a model that reads none, a missing or extra column, an empty cell, a missing row or the wrong range."""
    cols = meta.future_columns
    if not cols:
        if df is not None:
            raise ForecastError(f"the model reads no future covariates; drop {flag}.")
        return None
    if df is None:
        raise ForecastError(f"the model reads the future covariates {', '.join(cols)} over the horizon; give {flag} "
                            f"with {future_hint(meta, last)} and the columns {meta.date_column}, "
                            f"{', '.join(cols)}.")
    table = to_table(df, name, date_col=meta.date_column, columns=cols)
    want = future_dates(last, meta.freq, meta.horizon).astype("datetime64[ns]")
    got = table.dates.astype("datetime64[ns]")
    if len(got) != len(want) or (got != want).any():
        if len(got) and got[0] != want[0]:
            where = f"starts at {_stamp(got[0])}"
        elif len(got) < len(want):
            where = f"ends at {_stamp(got[-1])} ({len(got)} rows)"
        elif len(got) > len(want):
            where = f"goes on to {_stamp(got[-1])} ({len(got)} rows)"
        else:
            bad = int(np.flatnonzero(got != want)[0])
            where = f"has {_stamp(got[bad])} at data row {bad + 1} instead of {_stamp(want[bad])}"
        raise ForecastError(f"future covariates must cover {_stamp(want[0])} to {_stamp(want[-1])} ('{meta.freq}' "
                            f"steps, the H={meta.horizon} after the history's last row {_stamp(last)}); {name} "
                            f"{where}.")
    return table.values


def _requested(value: Any, known: tuple[float, ...], name: str, what: str, percent: bool, show: Any,
               none: str) -> tuple[float, ...]:
    """The levels in ``value`` (a number, ``"a,b"`` or a list), each one of ``known``; one line for any other."""
    if value is None or value == "" or value == []:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    example = "80 or 0.8 (80,90 for two)" if percent else "levels in (0, 1) like 0.1,0.9"
    out = []
    for item in items:
        try:
            level = float(item)
        except (TypeError, ValueError):
            raise ForecastError(f"{name} '{item}' is not a number; give {example}.") from None
        level = level / 100 if percent and level > 1 else level
        if not 0 < level < 1:
            raise ForecastError(f"{name} {item} is outside {'(0, 100)' if percent else '(0, 1)'}; give {example}.")
        found = [k for k in known if abs(k - level) < 1e-9]
        if not found:
            have = ", ".join(show(k) for k in known) or none
            raise ForecastError(f"{name} {show(level)} is not one the model has; its {what}s: {have}.")
        out.append(found[0])
    return tuple(dict.fromkeys(out))


def parse_levels(value: Any, calibrated: tuple[float, ...] | None, name: str = "--level") -> tuple[float, ...]:
    """Interval levels asked for (``80``, ``0.8``, ``"80,90"``), each one the model was calibrated at."""
    return _requested(value, calibrated or (), name, "calibrated interval level", True, level_name,
                      "none (trained with train.intervals: [])")


def parse_quantiles(value: Any, trained: tuple[float, ...], name: str = "--quantiles") -> tuple[float, ...]:
    """Quantile levels asked for (``"0.1,0.9"``), each one the model was trained for (train.quantiles)."""
    return _requested(value, trained, name, "quantile level", False, lambda q: f"{q:g}",
                      "none (train it with --set train.loss=quantile)")


def bound_columns(bounds: dict[float, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{"lo80": lower, "hi80": upper, ...}``: the interval bounds' column suffixes, one naming for every output."""
    return {f"{side}{level_name(level)}": b for level, pair in bounds.items() for side, b in zip(("lo", "hi"), pair)}


def forecast_frame(fc: Forecast, layout: str = "wide") -> pl.DataFrame:
    """Wide: ``date`` + one column per variate (then ``<col>_q0.1``, ... per quantile and ``<col>_lo80``,
    ``<col>_hi80``, ... per interval). Long: ``variable, date, value`` (then ``q0.1``, ``lo80``, ...)."""
    return pl.DataFrame(forecast_columns(fc, layout))


def panel_frame(fc: Forecast) -> pl.DataFrame:
    """The forecast as a long panel, neuralforecast's shape: ``unique_id, ds, y`` (then ``lo80``, ``hi80``, ...)."""
    return pl.DataFrame(panel_columns(fc))


def forecast_columns(fc: Forecast, layout: str = "wide") -> dict[str, Any]:
    """The columns of :func:`forecast_frame` as arrays, for any frame library (the pyfunc builds pandas from them
    directly: a fifth of the time of converting the polars frame, on every served request)."""
    bounds = {f"q{q:g}": v for q, v in fc.quantiles.items()}
    bounds.update(bound_columns(fc.bounds))
    if layout == "wide":
        cols: dict[str, Any] = {DATE_COL: fc.dates}
        for j, c in enumerate(fc.columns):
            cols[c] = fc.values[:, j]
            cols.update({f"{c}_{key}": b[:, j] for key, b in bounds.items()})
        return cols
    h, n = fc.values.shape
    return {
        "variable": np.repeat(np.asarray(fc.columns, dtype=object), h).tolist(),
        DATE_COL: np.tile(fc.dates, n),
        "value": fc.values.T.reshape(-1),
        **{key: b.T.reshape(-1) for key, b in bounds.items()},
    }


def panel_columns(fc: Forecast) -> dict[str, Any]:
    """The columns of :func:`panel_frame` as arrays."""
    names = {"variable": ID, DATE_COL: TIME, "value": TARGET}
    return {names.get(k, k): v for k, v in forecast_columns(fc, "long").items()}


def rolling_frame(rl: Rolling, layout: str = "wide") -> pl.DataFrame:
    """Wide: ``origin, date, step`` + the variates (then ``<col>_lo80``, ``<col>_hi80``, ... per interval). Long:
    ``origin, date, step, variable, value`` (then ``lo80``, ``hi80``, ...)."""
    assert rl.values is not None
    W, h, n = rl.values.shape
    origin = np.repeat(rl.origins, h)
    dates = rl.dates.reshape(-1)
    step = np.tile(np.arange(1, h + 1, dtype=np.int32), W)
    bounds = bound_columns(rl.bounds)
    if layout == "wide":
        flat = rl.values.reshape(W * h, n)
        cols: dict[str, Any] = {"origin": origin, DATE_COL: dates, "step": step}
        for j, c in enumerate(rl.columns):
            cols[c] = flat[:, j]
            cols.update({f"{c}_{key}": b.reshape(W * h, n)[:, j] for key, b in bounds.items()})
        return pl.DataFrame(cols)
    return pl.DataFrame({
        "origin": np.repeat(origin, n), DATE_COL: np.repeat(dates, n), "step": np.repeat(step, n),
        "variable": np.tile(np.asarray(rl.columns, dtype=object), W * h).tolist(),
        "value": rl.values.reshape(-1),
        **{key: b.reshape(-1) for key, b in bounds.items()},
    })


def output_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the output's suffix (CSV for stdout, ``-``); checked before any work is done."""
    if str(path) == STDIO:
        return "csv"
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ForecastError(f"--output '{path}' must end in .csv or .parquet.")
    writable_folder(path.parent, "--output", make=False)
    return fmt


def write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write CSV or parquet to a temp file beside ``path`` and rename it into place: never a partial file. For
    ``-``, the CSV goes to stdout in one write, after the forecast has succeeded."""
    fmt = output_format(path)
    if str(path) == STDIO:
        sys.stdout.write(frame.write_csv(None, datetime_format=DATETIME_FORMAT, float_precision=None))
        sys.stdout.flush()
        return
    try:
        with atomic_path(path) as tmp:
            if fmt == "csv":
                frame.write_csv(tmp, datetime_format=DATETIME_FORMAT, float_precision=None)
            else:
                frame.write_parquet(tmp)
    except OSError as err:  # a folder that takes no files (/proc), a full disk: nothing is left behind
        why = (err.strerror or (str(err).splitlines() or [type(err).__name__])[0]).split(" (os error")[0]
        raise ForecastError(f"--output '{path}' could not be written ({why}); give a path you can write to.") from None
