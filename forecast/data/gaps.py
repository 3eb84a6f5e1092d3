"""Gaps and steps in a table's time axis: on request, adding the missing steps and filling empty cells; and checking
every step is the data's (or the model's) frequency."""

from __future__ import annotations

import numpy as np

from forecast.data.loading import Table, ts
from forecast.data.timefeatures import fixed_step, infer_freq
from forecast.errors import ForecastError


FILL_METHODS = ("ffill", "interpolate")


def fill_missing(values: np.ndarray, columns: list[str], method: str, name: str) -> np.ndarray:
    """``values [T, N]`` with NaN/inf cells filled column-wise by ``ffill`` or linear ``interpolate``.

    ``ffill`` cannot fill a gap at the start of a column (an error naming it); ``interpolate`` fills the
    edges with the nearest value. A column with no value at all is an error.
    """
    if method not in FILL_METHODS:
        raise ForecastError(f"unknown fill method '{method}'; use --fill ffill or --fill interpolate.")
    import pandas as pd

    frame = pd.DataFrame(np.where(np.isfinite(values), values, np.nan).astype(np.float64), columns=columns)
    empty = frame.isna().all()
    if empty.any():
        raise ForecastError(f"{name}: column '{empty[empty].index[0]}' has no values at all; nothing to fill from.")
    if method == "ffill":
        filled = frame.ffill()
        lead = filled.isna().to_numpy()
        if lead.any():
            row, col = (int(i) for i in np.argwhere(lead)[0])
            raise ForecastError(
                f"{name}: column '{columns[col]}' is empty at data row {row + 1} with no earlier value to carry "
                "forward; use --fill interpolate or drop the leading rows."
            )
    else:
        filled = frame.interpolate(method="linear", limit_direction="both")
    return filled.to_numpy().astype(np.float32)


def regrid(table: Table, freq: str) -> Table:
    """``table`` on every ``freq`` step from its first timestamp to its last, missing rows added as empty cells for
    ``--fill`` to fill (a sensor's lost hours). A table with a timestamp off that grid is returned as it is, for
    :func:`check_frequency` to name the row."""
    dates = table.dates.astype("datetime64[ns]")
    step = fixed_step(freq)
    if step is not None:
        grid = np.arange(dates[0], dates[-1] + step, step)
    else:
        import pandas as pd

        try:
            grid = pd.date_range(pd.Timestamp(dates[0]), pd.Timestamp(dates[-1]), freq=freq).to_numpy()
        except (ValueError, TypeError):
            return table
    grid = grid.astype("datetime64[ns]")
    at = np.searchsorted(grid, dates)
    if len(grid) == len(dates) or (at >= len(grid)).any() or (grid[np.minimum(at, len(grid) - 1)] != dates).any():
        return table
    values = np.full((len(grid), table.values.shape[1]), np.nan, dtype=table.values.dtype)
    values[at] = table.values
    return Table(grid, values, table.columns)


def fill_gaps(table: Table, freq: str, method: str, name: str) -> Table:
    """``--fill``: the steps missing from a regular series added (:func:`regrid`), then every empty cell filled by
    ``method`` (:func:`fill_missing`); the one path of train, tune, predict and serving."""
    table = regrid(table, freq)
    if np.isfinite(table.values).all():
        return table
    return Table(table.dates, fill_missing(table.values, table.columns, method, name), table.columns)


def check_frequency(dates: np.ndarray, freq: str, name: str) -> None:
    """Every timestamp one ``freq`` step after the previous one; else a ForecastError naming the row.

    A different regular step names both frequencies; a gap or an irregular step names the first bad row.
    """
    step = fixed_step(freq)
    if step is not None:  # numpy, as pandas would place them (no pandas import on predict's common path)
        expected = np.datetime64(dates[0], "ns") + np.arange(len(dates)) * step
    else:
        import pandas as pd

        try:
            expected = pd.date_range(pd.Timestamp(dates[0]), periods=len(dates), freq=freq).to_numpy()
        except (ValueError, TypeError) as err:
            raise ForecastError(f"{name}: cannot build timestamps at the model's frequency '{freq}' ({err})."
                                ) from None
    bad = np.flatnonzero(expected.astype("datetime64[ns]") != dates.astype("datetime64[ns]"))
    if bad.size == 0:
        return
    found = infer_freq(dates)
    if found is not None and not _same_step(found, freq, expected):
        raise ForecastError(
            f"{name}: the timestamps are {found} apart but the model was trained on '{freq}' data; "
            f"resample the input to '{freq}'."
        )
    row = int(bad[0])
    if row == 0:
        raise ForecastError(
            f"{name}: the first timestamp {ts(dates[0])} is not on the model's '{freq}' frequency; "
            f"start the input on a '{freq}' step."
        )
    raise ForecastError(
        f"{name}: timestamp {ts(dates[row])} at data row {row + 1} breaks the '{freq}' frequency "
        f"(expected {ts(expected[row])} after {ts(dates[row - 1])}); add the missing steps (--fill ffill or --fill "
        f"interpolate adds and fills them) or resample the input to '{freq}'."
    )


def _same_step(found: str, freq: str, expected: np.ndarray) -> bool:
    """Whether the data's regular step ``found`` is the model's ``freq``: the same offset, or a gapped weekly series
    whose most common step (``168h``) is the length of the model's step (``W-TUE``)."""
    import pandas as pd

    if pd.tseries.frequencies.to_offset(found) == pd.tseries.frequencies.to_offset(freq):
        return True
    step = fixed_step(found)
    return step is not None and len(expected) > 1 and step == np.diff(expected[:2].astype("datetime64[ns]"))[0]
