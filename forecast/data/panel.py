"""Long-format panels, neuralforecast's convention: one row per (``unique_id``, ``ds``) with the value in ``y``.

:func:`to_wide` turns such a frame into the wide table every model reads (``date`` + one column per series):
series that share their timestamps become variates, named by their ``unique_id``. :func:`to_long` turns a wide
forecast back into ``unique_id, ds, y``, so output comes back in the shape it came in. Each problem is one line
that names the series: a duplicated (``unique_id``, ``ds``) pair, a series with a single row, a ``y`` that is not
a number, series on different timestamps (aligned with nulls only when the caller fills gaps).
"""

from __future__ import annotations

import polars as pl

from forecast.data.loading import parse_dates
from forecast.errors import ForecastError

ID, TIME, TARGET = "unique_id", "ds", "y"
DATE = "date"


def is_long(columns: list[str]) -> bool:
    """Whether a frame with these columns is a long panel (``unique_id``, ``ds`` and ``y``, and no ``date``)."""
    return {ID, TIME, TARGET} <= set(columns) and DATE not in columns


def _show(value: object) -> str:
    return str(value)[:19].replace("T", " ")


def to_wide(df: pl.DataFrame, name: str, align: bool = False) -> pl.DataFrame:
    """``date`` + one float column per ``unique_id``, sorted by date. ``align``: series on different timestamps
    are joined on the union of them, the missing cells null (for a caller that fills them); else that is an
    error."""
    extra = [c for c in df.columns if c not in (ID, TIME, TARGET)]
    if extra:
        raise ForecastError(f"{name}: column '{extra[0]}' is not {ID}, {TIME} or {TARGET}; a long file has those "
                            "three (covariates are not read yet: drop the column, or pivot it into its own series).")
    if df[ID].null_count():
        row = int(df[ID].is_null().arg_true()[0]) + 1
        raise ForecastError(f"{name}: data row {row} has no {ID}; name the series of every row.")
    ids = df[ID].cast(pl.Utf8)
    values = df[TARGET].cast(pl.Float64, strict=False)
    bad = values.is_null() & df[TARGET].is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise ForecastError(f"{name}: {TARGET} is not a number at data row {row + 1} ({df[TARGET][row]!r}, series "
                            f"'{ids[row]}'); give numeric values.")
    dates = pl.Series(TIME, parse_dates(df[TIME], name))
    frame = pl.DataFrame({ID: ids, TIME: dates, TARGET: values})
    dup = frame.group_by(ID, TIME).len().filter(pl.col("len") > 1).sort(ID, TIME)
    if dup.height:
        raise ForecastError(f"{name}: series '{dup[ID][0]}' has {dup['len'][0]} rows at {_show(dup[TIME][0])}; keep "
                            f"one row per ({ID}, {TIME}).")
    spans = frame.group_by(ID, maintain_order=True).agg(pl.len().alias("n"), pl.col(TIME).min().alias("first"),
                                                        pl.col(TIME).max().alias("last"))
    single = spans.filter(pl.col("n") < 2)
    if single.height:
        raise ForecastError(f"{name}: series '{single[ID][0]}' has a single row; a series needs a history (at least "
                            "the model's lookback L rows).")
    wide = frame.pivot(on=ID, index=TIME, values=TARGET, aggregate_function=None).sort(TIME)
    missing = [c for c in wide.columns if c != TIME and wide[c].null_count()]
    if missing and not align:
        odd = spans.filter(pl.col(ID) == missing[0]).row(0, named=True)
        raise ForecastError(
            f"{name}: series '{odd[ID]}' has {odd['n']:,} rows from {_show(odd['first'])} to {_show(odd['last'])}, "
            f"but the series together have {wide.height:,} timestamps from {_show(wide[TIME][0])} to "
            f"{_show(wide[TIME][-1])}; every series needs the same timestamps (or fill the gaps with --fill "
            "ffill|interpolate where the command offers it).")
    return wide.rename({TIME: DATE}).select(DATE, *[str(i) for i in spans[ID]])


def to_long(wide: pl.DataFrame, date_col: str = DATE) -> pl.DataFrame:
    """``unique_id, ds, y`` of a wide frame (``date`` + one column per series), series by series."""
    series = [c for c in wide.columns if c != date_col]
    return (wide.unpivot(on=series, index=date_col, variable_name=ID, value_name=TARGET)
            .rename({date_col: TIME}).select(ID, TIME, TARGET))
