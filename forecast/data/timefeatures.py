"""``timeF`` calendar features (Informer/TSLib ``timeenc=1``): each scaled into [-0.5, 0.5]."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Feature sets per frequency family, in the order TSLib uses.
_FEATURES: dict[str, tuple[str, ...]] = {
    "min": ("minute", "hour", "dayofweek", "day", "dayofyear"),
    "h": ("hour", "dayofweek", "day", "dayofyear"),
    "D": ("dayofweek", "day", "dayofyear"),
    "W": ("day", "weekofyear"),
    "M": ("month",),
    "s": ("second", "minute", "hour", "dayofweek", "day", "dayofyear"),
}


def freq_family(freq: str) -> str:
    offset = pd.tseries.frequencies.to_offset(freq)
    name = type(offset).__name__
    return {
        "Second": "s", "Minute": "min", "Hour": "h", "Day": "D", "BusinessDay": "D", "Week": "W",
        "MonthEnd": "M", "MonthBegin": "M", "QuarterEnd": "M", "YearEnd": "M",
    }.get(name, "h")


def n_time_features(freq: str) -> int:
    return len(_FEATURES[freq_family(freq)])


def time_features(dates: np.ndarray, freq: str) -> np.ndarray:
    """``[T, C]`` float32 calendar features of ``dates`` (datetime64) at ``freq``."""
    idx = pd.DatetimeIndex(dates)
    cols = []
    for feat in _FEATURES[freq_family(freq)]:
        if feat == "second":
            cols.append(idx.second / 59.0 - 0.5)
        elif feat == "minute":
            cols.append(idx.minute / 59.0 - 0.5)
        elif feat == "hour":
            cols.append(idx.hour / 23.0 - 0.5)
        elif feat == "dayofweek":
            cols.append(idx.dayofweek / 6.0 - 0.5)
        elif feat == "day":
            cols.append((idx.day - 1) / 30.0 - 0.5)
        elif feat == "dayofyear":
            cols.append((idx.dayofyear - 1) / 365.0 - 0.5)
        elif feat == "weekofyear":
            cols.append((idx.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5)
        elif feat == "month":
            cols.append((idx.month - 1) / 11.0 - 0.5)
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1).astype(np.float32)


def future_dates(last: np.datetime64, freq: str, steps: int) -> np.ndarray:
    """The ``steps`` timestamps after ``last`` at ``freq``."""
    return pd.date_range(pd.Timestamp(last), periods=steps + 1, freq=freq)[1:].to_numpy()


def infer_freq(dates: np.ndarray) -> str | None:
    """A pandas alias for regular ``dates``, or None when they are irregular."""
    if len(dates) < 3:
        return None
    idx = pd.DatetimeIndex(dates)
    freq = pd.infer_freq(idx[: min(len(idx), 2000)])
    if freq is None:
        # Fall back on the most common step (e.g. data with a few gaps).
        steps = np.diff(idx.asi8[: min(len(idx), 2000)])
        values, counts = np.unique(steps, return_counts=True)
        if counts.max() / counts.sum() < 0.9:
            return None
        freq = pd.tseries.frequencies.to_offset(pd.Timedelta(int(values[counts.argmax()]), unit="ns")).freqstr
    return freq
