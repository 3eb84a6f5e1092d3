"""A loaded series with the paper's splits and a train-only StandardScaler."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forecast.config import DataConfig, parse_split
from forecast.data import catalogue, store
from forecast.data.gaps import check_frequency, fill_gaps
from forecast.data.loading import Table, read_bytes, read_frame, to_table
from forecast.data.panel import is_long, to_wide
from forecast.data.roles import Roles, resolve_roles
from forecast.data.timefeatures import infer_freq, time_features
from forecast.data.windows import window_count
from forecast.errors import ForecastError

SPLITS = ("train", "val", "test")


def split_borders(rule: str, n_rows: int, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of each split; val and test start ``seq_len`` rows early (context only).

    ``ett_hour``: 12/4/4 months of 30 days of hourly rows; ``ett_minute``: the same x4;
    ``ratio``: train ``int(0.7 n)``, test ``int(0.2 n)``, val the rest.
    """
    if rule in ("ett_hour", "ett_minute"):
        month = 30 * 24 * (4 if rule == "ett_minute" else 1)
        b_train, b_val, b_test = 12 * month, 16 * month, 20 * month
        if n_rows < b_test:
            raise ForecastError(f"an ETT file needs {b_test} rows for the 12/4/4-month split, it has {n_rows}.")
        return _borders(b_train, b_val, b_test, seq_len)
    return ratio_borders((0.7, 0.1, 0.2), n_rows, seq_len)


def _borders(train_end: int, val_end: int, test_end: int, seq_len: int) -> dict[str, tuple[int, int]]:
    return {"train": (0, train_end), "val": (train_end - seq_len, val_end), "test": (val_end - seq_len, test_end)}


def ratio_borders(fractions: tuple[float, float, float], n_rows: int, seq_len: int) -> dict[str, tuple[int, int]]:
    """TSLib's rule for any fractions: train ``int(a n)`` rows, test ``int(c n)``, val the rest."""
    n_train, n_test = int(n_rows * fractions[0]), int(n_rows * fractions[2])
    return _borders(n_train, n_rows - n_test, n_rows, seq_len)


def custom_borders(split: str, dates: np.ndarray, seq_len: int) -> dict[str, tuple[int, int]]:
    """The borders ``data.split`` asks for (see :func:`forecast.config.parse_split`): fractions, or two dates whose
    first rows at or after them start val and test."""
    kind, values = parse_split(split)
    if kind == "ratio":
        return ratio_borders(values, len(dates), seq_len)
    first, last = dates[0], dates[-1]
    show = lambda d: str(d)[:19].replace("T", " ")  # noqa: E731
    for when in values:
        if not first < when <= last:
            raise ForecastError(f"--split date {show(when)} is outside the data ({show(first)} to {show(last)}); "
                                "give dates after its first row and at most its last.")
    val_start, test_start = (int(np.searchsorted(dates, when, side="left")) for when in values)
    return _borders(val_start, test_start, len(dates), seq_len)


@dataclass
class Series:
    """A whole series, standardized with statistics of the train rows alone."""

    name: str
    dates: np.ndarray  # [T] datetime64[ns]
    raw: np.ndarray  # [T, N] float32, original units
    columns: list[str]
    freq: str
    sha256: str
    source: str  # the file it came from
    borders: dict[str, tuple[int, int]]
    mean: np.ndarray  # [N] float64
    std: np.ndarray  # [N] float64
    marks: np.ndarray | None  # [T, C] float32 time features, or None
    # What each column is for (forecast.data.roles); the columns are in its order: targets, past, future covariates
    roles: Roles | None = None
    calendar: np.ndarray | None = None  # [T, C] float32 time features read as future covariates (roles.calendar)
    scaled: np.ndarray = field(init=False)  # [T, N] float32

    def __post_init__(self) -> None:
        self.scaled = ((self.raw - self.mean) / self.std).astype(np.float32)
        if self.roles is None:
            self.roles = Roles("M", tuple(self.columns))

    @property
    def n_targets(self) -> int:
        return self.roles.n_targets

    @property
    def n_inputs(self) -> int:
        """Columns the network reads over the lookback: targets and past covariates."""
        return self.roles.n_inputs

    def future_values(self) -> np.ndarray | None:
        """``[T, F]`` float32: the future covariates (standardized columns, then the calendar), or None."""
        parts = [self.scaled[:, self.n_inputs:]] if self.roles.future else []
        if self.calendar is not None:
            parts.append(self.calendar)
        return np.concatenate(parts, axis=1) if parts else None

    @property
    def n_future(self) -> int:
        return len(self.roles.future) + (0 if self.calendar is None else self.calendar.shape[1])

    @property
    def season(self) -> int:
        """Steps per season of this series' frequency (:func:`season_of`)."""
        return season_of(self.freq)

    def mase_scale(self) -> np.ndarray:
        """``[n_targets]``: the in-sample MAE of the seasonal naive forecast on the train rows (standardized), MASE's
        denominator per target (Hyndman and Koehler 2006); NaN for a column that never changes."""
        start, end = self.borders["train"]
        train, m = self.scaled[start:end, :self.n_targets].astype(np.float64), self.season
        if end - start <= m:
            m = 1
        scale = np.abs(train[m:] - train[:-m]).mean(axis=0)
        return np.where(scale > 0, scale, np.nan)

    @property
    def n_vars(self) -> int:
        return self.raw.shape[1]

    @property
    def n_marks(self) -> int:
        return 0 if self.marks is None else self.marks.shape[1]

    def train_rows(self) -> np.ndarray:
        start, end = self.borders["train"]
        return self.raw[start:end]


def season_of(freq: str) -> int:
    """Steps per season, as statsforecast and the M4 competition count them: one day of steps for sub-daily data
    (24 hourly, 96 for 15 minutes), 7 for daily, 5 for business days (a trading week), 52 for weekly, 24
    semi-monthly, 12 monthly, 4 quarterly (business month and quarter ends too), else 1."""
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.name.split("-")[0].upper()
    if offset.n == 1 and name in ("B", "C"):
        return 5
    name = name[1:] if name[:1] == "B" and len(name) > 1 else name  # BME, BMS, BQE, BQS, BYE: their calendar's
    for prefixes, season in ((("W",), 52), (("SM", "SME", "SMS"), 24), (("M", "ME", "MS"), 12),
                             (("Q", "QE", "QS"), 4), (("A", "Y", "YE", "YS"), 1)):
        if name in prefixes:
            return season
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return 1
    day = pd.Timedelta(days=1)
    if step < day and day % step == pd.Timedelta(0):
        return int(day / step)
    return 7 if step == day else 1


def fit_scaler(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population std (sklearn StandardScaler); a constant column gets std 1."""
    mean = train.astype(np.float64).mean(axis=0)
    std = train.astype(np.float64).std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _load_table(cfg: DataConfig, progress: bool) -> tuple[Table, str, str, str, str, bool]:
    """(table, name, split rule, freq, sha256, time features?) for a benchmark name or a user's file."""
    path = Path(cfg.dataset).expanduser()
    if catalogue.is_file_dataset(cfg.dataset):
        if not path.is_file():
            raise ForecastError(f"dataset file '{cfg.dataset}' not found; give an existing CSV/parquet path "
                                "or a benchmark name (see `forecast datasets`).")
        data = read_bytes(path)
        df = read_frame(path if path.suffix.lower() in (".parquet", ".pq") else data, str(path))
        if is_long(df.columns):  # unique_id, ds, y: one variate per series
            df = to_wide(df, str(path), align=cfg.fill is not None)
        table = to_table(df, str(path), allow_nan=cfg.fill is not None)
        freq = infer_freq(table.dates)
        if freq is None:
            raise ForecastError(f"{path}: the timestamps are not regularly spaced, so no frequency can be inferred; "
                                "resample the data to a fixed step first.")
        if cfg.fill is not None:
            table = fill_gaps(table, freq, cfg.fill, str(path))
        check_frequency(table.dates, freq, str(path))  # what predict checks: a gap would shift every later mark
        return table, catalogue.dataset_name(cfg.dataset), "ratio", freq, store.sha256_bytes(data), True
    info = catalogue.lookup(cfg.dataset)
    data, digest, source = store.fetch(info, cfg.data_dir, progress=progress)
    df = read_frame(data, str(source), has_header=info.has_header, benchmark=True)
    if not info.has_header:
        # Solar: no header, no dates. Give it a regular 10-minute index (the 2006 Alabama PV data).
        import polars as pl

        dates = np.arange(np.datetime64("2006-01-01T00:00"), df.height * 10, 10, dtype="datetime64[m]")
        df = df.rename({c: f"PV{i}" for i, c in enumerate(df.columns)}).with_columns(
            pl.Series("date", dates.astype("datetime64[ns]"))
        )
    table = to_table(df, str(source), check_order=False)
    # The data's own step wins (ILI is weekly on Tuesdays: W-TUE), the catalogue's is the fallback.
    return table, info.name, info.split, infer_freq(table.dates) or info.freq, digest, info.time_features


def load_series(cfg: DataConfig, progress: bool = True) -> Series:
    table, name, rule, freq, digest, with_marks = _load_table(cfg, progress)
    n = len(table.dates)
    borders = (custom_borders(cfg.split, table.dates, cfg.seq_len) if cfg.split is not None
               else split_borders(rule, n, cfg.seq_len))
    windows = {k: window_count(max(a, 0), b, cfg.seq_len, cfg.horizon) for k, (a, b) in borders.items()}
    for split, (start, end) in borders.items():
        if start < 0 or windows[split] < 1:
            counts = ", ".join(f"{k} {max(b - max(a, 0) - (cfg.seq_len if k != 'train' else 0), 0):,} rows "
                               f"({max(windows[k], 0):,} windows)" for k, (a, b) in borders.items())
            raise ForecastError(
                f"the {split} split of {name} leaves no window of seq_len {cfg.seq_len} + horizon {cfg.horizon} "
                f"({counts}); use a shorter --seq-len or --horizon, or move the --split borders."
            )
    roles = resolve_roles(cfg, table.columns, name)
    order = [table.columns.index(c) for c in roles.columns]
    raw = table.values if order == list(range(len(table.columns))) else table.values[:, order]
    mean, std = fit_scaler(raw[borders["train"][0]:borders["train"][1]])
    # The calendar is read as marks (the thuml-family models' built-in future covariate) or, when named among the
    # future covariates, as those: never both.
    feats = time_features(table.dates, cfg.mark_freq or freq) if (with_marks and cfg.time_features) or \
        roles.calendar else None
    calendar, marks = (feats, None) if roles.calendar else (None, feats)
    return Series(name=name, dates=table.dates, raw=raw, columns=roles.columns, freq=freq, sha256=digest,
                  source=str(cfg.dataset), borders=borders, mean=mean, std=std, marks=marks, roles=roles,
                  calendar=calendar)
