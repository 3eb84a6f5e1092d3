"""Loading a wide table (``date`` + numeric columns) into float32 arrays, with strict validation."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from forecast.errors import ForecastError


@dataclass(frozen=True)
class Table:
    dates: np.ndarray  # [T] datetime64[ns]
    values: np.ndarray  # [T, N] float32
    columns: list[str]  # N variate names, in order


def read_frame(source: Path | bytes, name: str, has_header: bool = True) -> pl.DataFrame:
    """A polars frame from CSV or parquet bytes/path; an unreadable or empty file is a ForecastError."""
    try:
        if isinstance(source, Path) and source.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(source)
        else:
            data = source if isinstance(source, bytes) else _read_maybe_gz(source)
            if not data.strip():
                raise ForecastError(f"{name} is empty; give a CSV with a date column and numeric columns.")
            df = pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema_length=10000,
                             try_parse_dates=False)
    except ForecastError:
        raise
    except Exception as err:  # polars raises many types for malformed files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ForecastError(f"{name} could not be read as CSV or parquet ({first}); "
                            "give a CSV/parquet file with a header row.") from None
    if df.height == 0 or df.width == 0:
        raise ForecastError(f"{name} has no data rows; give a CSV with a date column and numeric columns.")
    return df


def _read_maybe_gz(path: Path) -> bytes:
    import gzip

    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def parse_dates(col: pl.Series, name: str) -> np.ndarray:
    """datetime64[ns] from a string/date column; unparseable values are a ForecastError naming the row."""
    if col.dtype in (pl.Date, pl.Datetime) or isinstance(col.dtype, pl.Datetime):
        parsed = col.cast(pl.Datetime("ns"))
    else:
        text = col.cast(pl.Utf8)
        parsed = text.str.to_datetime(strict=False, time_unit="ns")
        if parsed.null_count() > text.null_count():
            import pandas as pd

            converted = pd.to_datetime(text.to_pandas(), errors="coerce", format="mixed")
            parsed = pl.Series(converted.to_numpy().astype("datetime64[ns]"))
    nulls = parsed.is_null()
    if nulls.any():
        row = int(nulls.arg_true()[0])
        raise ForecastError(
            f"{name}: column '{col.name}' has an unparseable date '{col[row]}' at data row {row + 1}; "
            "use ISO dates like 2016-07-01 00:00:00."
        )
    return parsed.to_numpy().astype("datetime64[ns]")


def to_table(
    df: pl.DataFrame, name: str, date_col: str = "date", allow_nan: bool = False, check_order: bool = True
) -> Table:
    """Validate and convert a wide frame: a date column, numeric variates, sorted unique timestamps.

    ``check_order=False`` is for the checksummed benchmarks, which are used as published (Weather repeats
    one timestamp).
    """
    if date_col not in df.columns:
        raise ForecastError(
            f"{name} has no '{date_col}' column (found: {', '.join(df.columns[:6])}); "
            f"add a '{date_col}' column with the timestamps as the first column."
        )
    dates = parse_dates(df[date_col], name)
    value_cols = [c for c in df.columns if c != date_col]
    if not value_cols:
        raise ForecastError(f"{name} has no value columns besides '{date_col}'; add at least one numeric column.")
    for c in value_cols:
        s = df[c]
        if not s.dtype.is_numeric():
            cast = s.cast(pl.Float64, strict=False)
            bad = cast.is_null() & s.is_not_null() & (s.cast(pl.Utf8).str.strip_chars() != "")
            if bad.any():
                row = int(bad.arg_true()[0])
                raise ForecastError(
                    f"{name}: column '{c}' has a non-numeric value '{s[row]}' at data row {row + 1}; "
                    "every column except the date must be numeric."
                )
    values = df.select([pl.col(c).cast(pl.Float64, strict=False) for c in value_cols]).to_numpy().astype(np.float32)
    if not allow_nan:
        missing = ~np.isfinite(values)
        if missing.any():
            row, col = (int(i) for i in np.argwhere(missing)[0])
            raise ForecastError(
                f"{name}: column '{value_cols[col]}' has an empty or NaN value at data row {row + 1}; "
                "fill the gap in the file (or use --fill ffill|interpolate where the command offers it)."
            )
    steps = np.diff(dates.astype("int64")) if check_order else np.ones(1, dtype=np.int64)
    if (steps == 0).any():
        row = int(np.argmax(steps == 0)) + 1
        raise ForecastError(f"{name}: duplicated timestamp {dates[row]} at data row {row + 1}; "
                            "keep one row per timestamp.")
    if (steps < 0).any():
        row = int(np.argmax(steps < 0)) + 1
        raise ForecastError(f"{name}: timestamps are not sorted (data row {row + 1}, {dates[row]}, comes after "
                            f"{dates[row - 1]}); sort the file by its date column.")
    return Table(dates=dates, values=values, columns=value_cols)
