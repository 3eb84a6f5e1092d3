"""Loading a wide table (``date`` + numeric columns) into float32 arrays, with strict validation."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from forecast.errors import ForecastError


FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Table:
    dates: np.ndarray  # [T] datetime64[ns]
    values: np.ndarray  # [T, N] float32
    columns: list[str]  # N variate names, in order


def read_frame(source: Path | bytes, name: str, has_header: bool = True, benchmark: bool = False) -> pl.DataFrame:
    """A polars frame from CSV or parquet bytes/path; an unreadable or empty file is a ForecastError.

    A user's header is checked (:func:`check_header`); a checksummed ``benchmark`` is read as published (Weather's
    header has ``W/m\ufffd``, a replacement character its publisher wrote as UTF-8)."""
    utf8 = True  # parquet names are UTF-8 by format
    try:
        if isinstance(source, Path) and source.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(source)
        else:
            data = source if isinstance(source, bytes) else read_bytes(source)
            utf8 = _utf8_header(data)
            if not data.strip():
                raise ForecastError(f"{name} is empty; give a CSV with a date column and numeric columns.")
            df = _read_csv(data, has_header)
    except ForecastError:
        raise
    except Exception as err:  # polars raises many types for malformed files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ForecastError(f"{name} could not be read as CSV or parquet ({first}); "
                            "give a CSV/parquet file with a header row.") from None
    df = df.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines (at the end of a file, typically)
    if df.height == 0 or df.width == 0:
        raise ForecastError(f"{name} has no data rows; give a CSV with a date column and numeric columns.")
    if not benchmark:
        check_header(df.columns, name, utf8)
    return df


def _read_csv(data: bytes, has_header: bool) -> pl.DataFrame:
    """Column types from the first 10,000 rows; where a later row does not fit them (a column of whole numbers that
    turns decimal further down, as TimeXer's EPF files do after row 10,000), from every row."""
    try:
        return pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema_length=10000, try_parse_dates=False)
    except pl.exceptions.ComputeError:
        return pl.read_csv(io.BytesIO(data), has_header=has_header, infer_schema_length=None, try_parse_dates=False)


def _utf8_header(data: bytes) -> bool:
    """Whether the first line is valid UTF-8 (then a U+FFFD in it is a character of the name, as in Weather's
    published ``SWDR (W/m\ufffd)``, not a byte that failed to decode)."""
    try:
        data.split(b"\n", 1)[0].decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def check_header(columns: list[str], name: str, utf8: bool = False) -> None:
    """Column names as written, never silently changed: no spaces around a name, no name twice (polars would make
    the second ``OT_duplicated_0``), and UTF-8 text (a latin-1 ``ÖT`` would read as ``\ufffdT``; ``utf8``: the
    header's bytes were valid UTF-8, so a U+FFFD is the name's own)."""
    for i, c in enumerate(columns):
        if not c.strip():
            raise ForecastError(f"{name}: column {i + 1} of the header has no name; name every column.")
        if c != c.strip():
            raise ForecastError(f"{name}: column {c!r} has spaces around its name; write it as '{c.strip()}'.")
        if any(ch < " " and ch != "\t" for ch in c):  # a tab: the separator check below says more
            raise ForecastError(f"{name}: column {i + 1}'s name {c!r} holds a control character; write it as text.")
        if "\ufffd" in c and not utf8:
            raise ForecastError(f"{name}: column {c!r} is not UTF-8 text; save the file as UTF-8.")
        base, sep, _ = c.rpartition("_duplicated_")
        if sep and base in columns:
            raise ForecastError(f"{name}: column '{base}' appears more than once in the header; keep one column "
                                "per variate.")


def read_piped(data: bytes, name: str) -> pl.DataFrame:
    """A table piped in (``forecast predict -i -``): CSV, gzipped CSV or parquet, told apart by their first bytes."""
    if not data.strip():
        raise ForecastError(f"{name} is empty; pipe a CSV or parquet table into it, or give a file.")
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, name)
    if data[:4] == b"PAR1":
        try:
            return pl.read_parquet(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 (polars' parquet errors share no base class)
            raise ForecastError(f"{name} is not a readable parquet table ({str(err).splitlines()[0]}).") from None
    return read_frame(data, name)


def read_bytes(path: Path) -> bytes:
    """The file's content, uncompressed when it ends in .gz (the one reader of gzipped files); a .gz that is not
    gzip is one line."""
    raw = path.read_bytes()
    return gunzip(raw, str(path)) if path.suffix.lower() == ".gz" else raw


def gunzip(raw: bytes, name: str) -> bytes:
    """``raw`` uncompressed; a cut-short or damaged gzip stream is one line (the one reader of gzipped data)."""
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ForecastError(f"{name} is cut short (the gzip stream ends early); copy or download it again.") from None
    except OSError as err:
        raise ForecastError(f"{name} is not a gzip file ({err}); give a .csv, .csv.gz or .parquet file.") from None


def ts(value: np.datetime64) -> str:
    """A timestamp as people write it: ``2018-06-26 19:00:00`` (no ``T``, no nanoseconds)."""
    return str(np.datetime_as_string(np.datetime64(value, "s"), unit="s")).replace("T", " ")


def parse_dates(col: pl.Series, name: str) -> np.ndarray:
    """datetime64[ns] from a string/date column; unparseable values are a ForecastError naming the row.

    Numbers are not taken for dates (epoch seconds or milliseconds cannot be told apart from a row index), and
    dates with a time zone are refused rather than silently moved to UTC (the forecast's timestamps would then be
    hours off the input's)."""
    if col.dtype.is_numeric():
        raise ForecastError(f"{name}: column '{col.name}' holds numbers ({col[0]} at data row 1), not dates; write "
                            "ISO dates like 2016-07-01 00:00:00 (convert Unix times to dates first).")
    if isinstance(col.dtype, pl.Datetime) and col.dtype.time_zone is not None:
        _zoned(name, col.name, f"zone {col.dtype.time_zone}")
    if col.dtype in (pl.Date, pl.Datetime) or isinstance(col.dtype, pl.Datetime):
        parsed = col.cast(pl.Datetime("ns"))
    else:
        text = col.cast(pl.Utf8)
        zoned = text.str.contains(r"(Z|[+-]\d\d:?\d\d)$")
        if zoned.any():
            row = int(zoned.arg_true()[0])
            _zoned(name, col.name, f"'{text[row]}' at data row {row + 1}")
        try:
            parsed = text.str.to_datetime(strict=False, time_unit="ns")
        except pl.exceptions.ComputeError:  # no format polars can infer from the first values: let pandas try
            parsed = pl.Series([None] * len(text), dtype=pl.Datetime("ns"))
        if parsed.null_count() > text.null_count():
            parsed = _pandas_dates(text)
    nulls = parsed.is_null()
    if nulls.any():
        row = int(nulls.arg_true()[0])
        raise ForecastError(
            f"{name}: column '{col.name}' has an unparseable date '{col[row]}' at data row {row + 1}; "
            "use ISO dates like 2016-07-01 00:00:00."
        )
    return parsed.to_numpy().astype("datetime64[ns]")


def _zoned(name: str, col: str, where: str) -> None:
    raise ForecastError(f"{name}: column '{col}' has dates with a time zone ({where}); write local times without an "
                        "offset, in one zone for the whole file.")


def _pandas_dates(text: pl.Series) -> pl.Series:
    """pandas' mixed-format parser for what polars cannot infer; a value it cannot take at all becomes null."""
    import pandas as pd

    values = text.to_pandas()
    try:
        converted = pd.to_datetime(values, errors="coerce", format="mixed")
    except (ValueError, TypeError, OverflowError):  # one odd value spoils the vectorized parse: go value by value
        def one(v: object) -> object:
            try:
                return pd.to_datetime(v, errors="coerce", format="mixed")
            except (ValueError, TypeError, OverflowError):
                return pd.NaT

        converted = pd.Series([one(v) for v in values], dtype="datetime64[ns]")
    return pl.Series(converted.to_numpy().astype("datetime64[ns]"))


def to_table(
    df: pl.DataFrame,
    name: str,
    date_col: str = "date",
    allow_nan: bool = False,
    check_order: bool = True,
    columns: list[str] | None = None,
) -> Table:
    """Validate and convert a wide frame: a date column, numeric variates, sorted unique timestamps.

    ``check_order=False`` is for the checksummed benchmarks, which are used as published (Weather repeats
    one timestamp). ``columns``, when given, is the exact set of variates expected (a saved model's schema):
    a missing or an extra column is an error, and the result is in this order (columns match by name).
    """
    if date_col not in df.columns:
        raise ForecastError(_no_date_message(df, name, date_col))
    if columns is not None:
        check_columns(df.columns, columns, name, date_col)
    dates = parse_dates(df[date_col], name)
    value_cols = list(columns) if columns is not None else [c for c in df.columns if c != date_col]
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
    wide = df.select([pl.col(c).cast(pl.Float64, strict=False) for c in value_cols]).to_numpy()  # float64
    huge = np.abs(np.nan_to_num(wide, nan=0.0, posinf=0.0, neginf=0.0)) > FLOAT32_MAX
    infinite = np.isinf(wide)
    for bad, what in ((huge, f"is beyond float32's range (±{FLOAT32_MAX:.4g})"), (infinite, "is infinite")):
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise ForecastError(f"{name}: column '{value_cols[col]}' value {wide[row, col]:g} at data row {row + 1} "
                                f"{what}; the models compute in float32, so rescale the column or fix the value.")
    values = wide.astype(np.float32)
    if not allow_nan:
        missing = np.isnan(values)
        if missing.any():
            row, col = (int(i) for i in np.argwhere(missing)[0])
            raise ForecastError(
                f"{name}: column '{value_cols[col]}' has an empty or NaN value at data row {row + 1}; "
                "fill the gap in the file (or use --fill ffill|interpolate where the command offers it)."
            )
    steps = np.diff(dates.astype("int64")) if check_order else np.ones(1, dtype=np.int64)
    if (steps == 0).any():
        row = int(np.argmax(steps == 0)) + 1
        raise ForecastError(f"{name}: duplicated timestamp {ts(dates[row])} at data row {row + 1}; "
                            "keep one row per timestamp.")
    if (steps < 0).any():
        row = int(np.argmax(steps < 0)) + 1
        raise ForecastError(f"{name}: timestamps are not sorted (data row {row + 1}, {ts(dates[row])}, comes after "
                            f"{ts(dates[row - 1])}); sort the file by its date column.")
    return Table(dates=dates, values=values, columns=value_cols)


def _no_date_message(df: pl.DataFrame, name: str, date_col: str) -> str:
    """Why ``df`` has no ``date_col``, with the likely fix: another separator, or a date column by another name."""
    head = df.columns[0] if df.columns else ""
    if len(df.columns) == 1:
        sep = next((s for s in (";", "\t", "|") if s in head), None)
        if sep is not None:
            shown = "tab" if sep == "\t" else f"'{sep}'"
            header = head[:40].replace("\t", "\\t")
            return (f"{name} looks {shown}-separated (its header is one column, '{header}'); "
                    "save it with commas between the columns.")
    first = df[head] if head and df.height else None
    if first is not None and not first.dtype.is_numeric():  # numbers are not taken for dates
        try:
            parse_dates(first.head(5), name)
        except ForecastError:
            pass
        else:
            return (f"{name} has no '{date_col}' column, but its first column '{head}' holds dates; "
                    f"rename that column to '{date_col}'.")
    return (f"{name} has no '{date_col}' column (found: {', '.join(df.columns[:6])}); "
            f"add a '{date_col}' column with the timestamps as the first column.")


def check_columns(found: list[str], expected: list[str], name: str, date_col: str = "date") -> None:
    """Exactly the ``expected`` variate columns besides ``date_col``, in any order; else a ForecastError."""
    have = [c for c in found if c != date_col]
    dup = sorted({c for c in have if have.count(c) > 1})
    if dup:
        raise ForecastError(f"{name}: column '{dup[0]}' appears more than once; keep one column per variate.")
    missing = [c for c in expected if c not in have]
    if missing:
        raise ForecastError(
            f"{name}: column '{missing[0]}' is missing (the model needs {_names(expected)}); "
            "add it (columns are matched by name, in any order)."
        )
    extra = [c for c in have if c not in expected]
    if extra:
        raise ForecastError(
            f"{name}: unexpected column '{extra[0]}' (the model was trained on {_names(expected)}); "
            "remove it or rename it to one of those."
        )


def _names(columns: list[str], limit: int = 8) -> str:
    """``a, b, c`` or, for many columns, ``a, b, ..., z (862 columns)``."""
    if len(columns) <= limit:
        return ", ".join(columns)
    return f"{', '.join(columns[: limit - 1])}, ..., {columns[-1]} ({len(columns)} columns)"
