"""Timestamps and calendar features without pandas: the numpy paths give exactly what pandas gives (fixed steps,
calendar fields, the frequency check's verdicts), and a `forecast predict` of hourly data never imports pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.data.gaps import check_frequency
from forecast.data.timefeatures import calendar_fields, fixed_step, freq_family, future_dates, time_features
from forecast.errors import ForecastError

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["h", "2h", "15min", "10min", "min", "D", "3D", "s", "30s", "ms", "us", "ns"]
CALENDAR = ["W-SUN", "W-TUE", "MS", "ME", "B", "QS", "H", "0h", "h ", "", None, 3]


def _random_dates(n: int, seed: int = 0) -> np.ndarray:
    """Timestamps at any nanosecond from 1901 to 2099, leap days and pre-1970 dates included."""
    rng = np.random.default_rng(seed)
    lo, hi = np.datetime64("1901-01-01", "ns").astype(np.int64), np.datetime64("2099-12-31", "ns").astype(np.int64)
    picks = rng.integers(lo, hi, n).astype("datetime64[ns]")
    edges = np.array(["1904-02-29T23:59:59.999999999", "1969-12-31T23:00", "1970-01-01", "2000-12-31T12:00",
                      "2024-02-29T00:00"], dtype="datetime64[ns]")
    return np.concatenate([picks, edges])


def test_calendar_fields_equal_pandas() -> None:
    dates = _random_dates(20_000)
    idx = pd.DatetimeIndex(dates)
    got = calendar_fields(dates)
    for name in ("second", "minute", "hour", "dayofweek", "day", "dayofyear", "month"):
        np.testing.assert_array_equal(got[name], np.asarray(getattr(idx, name), dtype=np.int64), err_msg=name)


@pytest.mark.parametrize("freq", ["s", "min", "h", "D", "W-SUN", "MS"])
def test_time_features_equal_the_pandas_computation(freq: str) -> None:
    dates = _random_dates(5_000, seed=1)
    idx = pd.DatetimeIndex(dates)
    by_name = {"second": idx.second / 59.0 - 0.5, "minute": idx.minute / 59.0 - 0.5, "hour": idx.hour / 23.0 - 0.5,
               "dayofweek": idx.dayofweek / 6.0 - 0.5, "day": (idx.day - 1) / 30.0 - 0.5,
               "dayofyear": (idx.dayofyear - 1) / 365.0 - 0.5, "month": (idx.month - 1) / 11.0 - 0.5,
               "weekofyear": (idx.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5}
    names = {"s": ["second", "minute", "hour", "dayofweek", "day", "dayofyear"],
             "min": ["minute", "hour", "dayofweek", "day", "dayofyear"], "h": ["hour", "dayofweek", "day", "dayofyear"],
             "D": ["dayofweek", "day", "dayofyear"], "W-SUN": ["day", "weekofyear"], "MS": ["month"]}[freq]
    want = np.stack([np.asarray(by_name[n], dtype=np.float64) for n in names], axis=1).astype(np.float32)
    np.testing.assert_array_equal(time_features(dates, freq), want)


@pytest.mark.parametrize("freq", FIXED)
def test_fixed_steps_place_timestamps_as_pandas_does(freq: str) -> None:
    assert fixed_step(freq) == pd.tseries.frequencies.to_offset(freq).nanos
    assert freq_family(freq) == {"Second": "s", "Minute": "min", "Hour": "h", "Day": "D"}.get(
        type(pd.tseries.frequencies.to_offset(freq)).__name__, "h")
    for last in ("2016-07-01 00:00", "2018-06-26 19:07:13", "1969-12-31 23:59:59.5", "2024-02-28 23:00"):
        want = pd.date_range(pd.Timestamp(last), periods=97, freq=freq)[1:].to_numpy().astype("datetime64[ns]")
        got = future_dates(np.datetime64(last), freq, 96)
        assert got.dtype == np.dtype("datetime64[ns]")
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("freq", CALENDAR)
def test_calendar_and_odd_aliases_are_left_to_pandas(freq: object) -> None:
    assert fixed_step(freq) is None


def test_the_frequency_check_gives_pandas_verdicts_on_fixed_steps() -> None:
    dates = pd.date_range("2018-01-01 00:15", periods=200, freq="15min").to_numpy()  # datetime64[us] in pandas 3
    check_frequency(dates, "15min", "h.csv")  # regular: no error
    gap = np.delete(dates, 120)
    with pytest.raises(ForecastError, match=r"timestamp 2018-01-02 06:30:00 at data row 121 breaks the '15min' "
                                            r"frequency \(expected 2018-01-02 06:15:00 after 2018-01-02 06:00:00\)"):
        check_frequency(gap, "15min", "h.csv")
    with pytest.raises(ForecastError, match="the timestamps are 15min apart but the model was trained on 'h' data"):
        check_frequency(dates, "h", "h.csv")
    weekly = pd.date_range("2020-01-07", periods=30, freq="W-TUE").to_numpy()
    check_frequency(weekly, "W-TUE", "w.csv")  # a calendar frequency goes through pandas
    with pytest.raises(ForecastError, match="breaks the 'W-TUE' frequency"):
        check_frequency(np.delete(weekly, 5), "W-TUE", "w.csv")


@pytest.mark.slow
def test_predict_of_hourly_data_never_imports_pandas(tmp_path: Path) -> None:
    """The DLinear fixture (``freq: h``) forecasts a wide CSV in a fresh process; pandas is a fifth of predict's
    start-up beyond ``import torch``, and nothing on this path needs it (nor rich, with ``-q``)."""
    fixture = ROOT / "tests" / "fixtures" / "artifact_v0_1" / "dlinear"
    hist = tmp_path / "h.csv"
    dates = pd.date_range("2017-06-24", periods=400, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    rows = [",".join([d, *(f"{np.sin(i / (k + 3)):.4f}" for k in range(7))]) for i, d in enumerate(dates)]
    hist.write_text("date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n" + "\n".join(rows) + "\n")
    code = ("import sys; from cli import main\n"
            "sys.argv = ['forecast', 'predict', '-m', sys.argv[1], '-i', sys.argv[2], '-o', sys.argv[3], '-q']\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('pandas', 'lightning', 'mlflow', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(fixture), str(hist), str(tmp_path / "fc.csv")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "fc.csv").read_text().count("\n") == 1 + 24  # the fixture's horizon


def test_the_season_mase_compares_with_follows_the_calendar_of_each_frequency() -> None:
    """One day of steps below a day, a week of days (a trading week of business days), then the year's weeks,
    half-months, months and quarters, business month and quarter ends alike; 1 where no season fits."""
    from forecast.data.series import season_of

    want = {"10min": 144, "15min": 96, "h": 24, "2h": 12, "D": 7, "B": 5, "C": 5, "W-TUE": 52, "SMS": 24,
            "ME": 12, "MS": 12, "BME": 12, "BMS": 12, "QE": 4, "QS-JAN": 4, "BQE": 4, "YS": 1, "2D": 1, "2B": 1}
    assert {f: season_of(f) for f in want} == want
