"""``timeF`` calendar features (Informer/TSLib ``timeenc=1``): each scaled into [-0.5, 0.5]; and the timestamps after
a history.

Fixed-length steps (``h``, ``15min``, ``D``, ...) and the calendar fields are numpy arithmetic, equal to pandas'
(tests/test_timefeatures.py), so that a ``forecast predict`` of such data never imports pandas (a fifth of its
start-up); calendar frequencies (weeks on a weekday, months, business days) and the ISO week go through pandas.
"""

from __future__ import annotations

import re

import numpy as np

# Feature sets per frequency family, in the order TSLib uses.
_FEATURES: dict[str, tuple[str, ...]] = {
    "min": ("minute", "hour", "dayofweek", "day", "dayofyear"),
    "h": ("hour", "dayofweek", "day", "dayofyear"),
    "D": ("dayofweek", "day", "dayofyear"),
    "W": ("day", "weekofyear"),
    "M": ("month",),
    "s": ("second", "minute", "hour", "dayofweek", "day", "dayofyear"),
}


_FIXED = re.compile(r"([1-9][0-9]*)?(D|h|min|s|ms|us|ns)")
_FIXED_FAMILY = {"D": "D", "h": "h", "min": "min", "s": "s", "ms": "h", "us": "h", "ns": "h"}  # as pandas' offsets
_NUMPY_UNIT = {"min": "m"}


def _fixed(freq: object) -> re.Match[str] | None:
    """``(count, unit)`` of a fixed-length pandas alias (``h``, ``15min``, ``D``); None for anything else (calendar
    offsets such as ``W-SUN``, ``MS``, ``B``, which pandas places, and legacy aliases such as ``H``)."""
    return _FIXED.fullmatch(freq) if isinstance(freq, str) else None


def fixed_step(freq: object) -> np.timedelta64 | None:
    """One step of a fixed-length alias (:func:`_fixed`) as ``timedelta64[ns]``; None for any other frequency."""
    m = _fixed(freq)
    if m is None:
        return None
    return np.timedelta64(int(m.group(1) or 1), _NUMPY_UNIT.get(m.group(2), m.group(2))).astype("timedelta64[ns]")


def freq_family(freq: str) -> str:
    m = _fixed(freq)
    if m is not None:
        return _FIXED_FAMILY[m.group(2)]
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    name = type(offset).__name__
    return {
        "Second": "s", "Minute": "min", "Hour": "h", "Day": "D", "BusinessDay": "D", "Week": "W",
        "MonthEnd": "M", "MonthBegin": "M", "QuarterEnd": "M", "YearEnd": "M",
    }.get(name, "h")


def n_time_features(freq: str) -> int:
    return len(_FEATURES[freq_family(freq)])


def calendar_fields(dates: np.ndarray) -> dict[str, np.ndarray]:
    """pandas' ``second``, ``minute``, ``hour``, ``dayofweek`` (Monday 0), ``day``, ``dayofyear`` and ``month`` of
    tz-naive ``dates``, as int64 arrays (numpy's casts to coarser units floor, as the calendar does)."""
    d = np.asarray(dates).astype("datetime64[ns]")
    days, months = d.astype("datetime64[D]"), d.astype("datetime64[M]")
    ns = (d - days).astype(np.int64)  # into the day
    return {"second": ns // 10**9 % 60, "minute": ns // (60 * 10**9) % 60, "hour": ns // (3600 * 10**9),
            "dayofweek": (days.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday
            "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
            "dayofyear": (days - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1,
            "month": months.astype(np.int64) % 12 + 1}


def time_features(dates: np.ndarray, freq: str) -> np.ndarray:
    """``[T, C]`` float32 calendar features of ``dates`` (datetime64) at ``freq``."""
    idx = calendar_fields(dates)
    cols = []
    for feat in _FEATURES[freq_family(freq)]:
        if feat == "second":
            cols.append(idx["second"] / 59.0 - 0.5)
        elif feat == "minute":
            cols.append(idx["minute"] / 59.0 - 0.5)
        elif feat == "hour":
            cols.append(idx["hour"] / 23.0 - 0.5)
        elif feat == "dayofweek":
            cols.append(idx["dayofweek"] / 6.0 - 0.5)
        elif feat == "day":
            cols.append((idx["day"] - 1) / 30.0 - 0.5)
        elif feat == "dayofyear":
            cols.append((idx["dayofyear"] - 1) / 365.0 - 0.5)
        elif feat == "weekofyear":
            import pandas as pd

            cols.append((pd.DatetimeIndex(dates).isocalendar().week.to_numpy() - 1) / 52.0 - 0.5)
        elif feat == "month":
            cols.append((idx["month"] - 1) / 11.0 - 0.5)
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1).astype(np.float32)


def future_dates(last: np.datetime64, freq: str, steps: int) -> np.ndarray:
    """The ``steps`` timestamps after ``last`` at ``freq`` (datetime64[ns])."""
    step = fixed_step(freq)
    if step is not None:
        return np.datetime64(last, "ns") + np.arange(1, steps + 1) * step
    import pandas as pd

    return pd.date_range(pd.Timestamp(last), periods=steps + 1, freq=freq)[1:].to_numpy()


def infer_freq(dates: np.ndarray) -> str | None:
    """A pandas alias for regular ``dates``, or None when they are irregular."""
    if len(dates) < 3:
        return None
    import pandas as pd

    idx = pd.DatetimeIndex(np.asarray(dates).astype("datetime64[ns]"))  # asi8 below counts nanoseconds
    freq = pd.infer_freq(idx[: min(len(idx), 2000)])
    if freq is None:
        # Fall back on the most common step (e.g. data with a few gaps).
        steps = np.diff(idx.asi8[: min(len(idx), 2000)])
        values, counts = np.unique(steps, return_counts=True)
        if counts.max() / counts.sum() < 0.9:
            return None
        freq = pd.tseries.frequencies.to_offset(pd.Timedelta(int(values[counts.argmax()]), unit="ns")).freqstr
    return freq
