"""The model's description (``forecast_model.json``): :class:`ModelMeta`, every field checked for its type and range
before anything is built from it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import forecast
from forecast.data.timefeatures import fixed_step
from forecast.errors import ForecastError

META_FORMAT = 1
DATE_COL = "date"
# What a description may ask for: far past any benchmark (L, H <= 720; 862 variates), far short of what would
# exhaust memory before the weights are compared with it.
MAX_STEPS = 100_000
MAX_VARS = 100_000
MAX_MARKS = 64


@dataclass(frozen=True)
class ModelMeta:
    """What predicting needs besides the weights: the input schema, the scaler and the model's shape."""

    model_name: str
    seq_len: int  # L: rows of history one forecast reads
    horizon: int  # H: steps it forecasts
    columns: list[str]  # the variates, in the model's order
    mean: list[float]  # train-split scaler, per column
    std: list[float]
    freq: str  # pandas alias of the training data's step, e.g. "h", "15min", "W-TUE"
    n_marks: int  # time-feature channels fed to the model (0: none)
    forecast_version: str
    date_column: str = DATE_COL
    format: int = META_FORMAT
    mark_freq: str | None = None  # the step of the time features when not ``freq`` (data.mark_freq)
    # What the columns are for (forecast.data.roles): ``columns`` is targets + past + future covariates, in that order.
    # None (models before covariates, and M): every column is a target.
    features: str = "M"
    targets: list[str] | None = None
    past_covariates: list[str] | None = None
    future_covariates: list[str] | None = None  # columns known over the horizon, given by --future when predicting
    n_calendar: int = 0  # time features read as future covariates (the "calendar" covariate), 0: none
    ignored_columns: list[str] | None = None  # columns of the training data in no role: dropped from a history

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ModelMeta:
        """``doc``, every field checked for type and range before anything is built (no allocation on its word)."""
        if not isinstance(doc, dict):
            raise ForecastError(f"{where} is not a forecast model description (not a JSON object).")
        try:
            meta = cls(**doc)
        except TypeError as err:
            raise ForecastError(f"{where} is not a forecast model description ({err}).") from None
        _check_meta(meta, where)
        return meta

    @property
    def n_vars(self) -> int:
        return len(self.columns)

    @property
    def target_columns(self) -> list[str]:
        return list(self.targets) if self.targets is not None else list(self.columns)

    @property
    def n_targets(self) -> int:
        return len(self.target_columns)

    @property
    def future_columns(self) -> list[str]:
        return list(self.future_covariates or [])

    @property
    def n_inputs(self) -> int:
        """Columns read over the lookback only: the targets and the past covariates."""
        return self.n_vars - len(self.future_columns)

    @property
    def n_future(self) -> int:
        """Future-covariate channels the network reads: the columns, then the calendar features."""
        return len(self.future_columns) + self.n_calendar

    def check_horizon(self, horizon: int | None, name: str = "--horizon") -> int:
        """The steps to keep: ``horizon`` (``name``: the flag or ``params.horizon``), at most H; None means H."""
        if horizon is None:
            return self.horizon
        if not 1 <= horizon <= self.horizon:
            raise ForecastError(f"{name} {horizon} is outside 1..{self.horizon}; the model forecasts "
                                f"H={self.horizon} steps, so ask for at most that many.")
        return horizon


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(meta: ModelMeta, where: str) -> None:
    def bad(field: str, why: str) -> ForecastError:
        return ForecastError(f"{where}: {field} {why}; the model artifact is damaged or was edited, log it again.")

    if not _is_int(meta.format):
        raise bad("format", f"must be an integer, got {meta.format!r}")
    if meta.format > META_FORMAT:
        raise ForecastError(f"{where} has format {meta.format}, newer than this forecast "
                            f"understands ({META_FORMAT}); upgrade forecast.")
    for field, top in (("seq_len", MAX_STEPS), ("horizon", MAX_STEPS), ("n_marks", MAX_MARKS)):
        value, low = getattr(meta, field), 0 if field == "n_marks" else 1
        if not _is_int(value) or not low <= value <= top:
            raise bad(field, f"must be an integer in {low}..{top}, got {value!r}")
    for field in ("model_name", "freq", "forecast_version", "date_column"):
        if not isinstance(getattr(meta, field), str) or not getattr(meta, field):
            raise bad(field, f"must be a non-empty string, got {getattr(meta, field)!r}")
    if not isinstance(meta.columns, list) or not 1 <= len(meta.columns) <= MAX_VARS or not all(
            isinstance(c, str) and c for c in meta.columns):
        raise bad("columns", f"must be a list of 1..{MAX_VARS} non-empty names")
    if len(set(meta.columns)) != len(meta.columns) or meta.date_column in meta.columns:
        raise bad("columns", "must be distinct names, none of them the date column")
    for field in ("mean", "std"):
        values = getattr(meta, field)
        if not isinstance(values, list) or len(values) != len(meta.columns) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad(field, f"must be {len(meta.columns)} finite numbers, one per column")
    if not all(v > 0 for v in meta.std):
        raise bad("std", "must be positive")
    _check_roles(meta, bad)
    for field in ("freq", "mark_freq"):
        value = getattr(meta, field)
        if value is not None and not _is_frequency(value):
            raise bad(field, f"must be a pandas frequency such as h or 15min, got {value!r}")


def _check_roles(meta: ModelMeta, bad: Any) -> None:
    """``columns`` must be exactly the targets, the past and the future covariates, in that order."""
    if meta.features not in ("M", "S", "MS"):
        raise bad("features", f"must be M, S or MS, got {meta.features!r}")
    if not _is_int(meta.n_calendar) or not 0 <= meta.n_calendar <= MAX_MARKS:
        raise bad("n_calendar", f"must be an integer in 0..{MAX_MARKS}, got {meta.n_calendar!r}")
    groups = [meta.targets, meta.past_covariates, meta.future_covariates, meta.ignored_columns]
    for name, group in zip(("targets", "past_covariates", "future_covariates", "ignored_columns"), groups):
        if group is not None and (not isinstance(group, list) or not all(isinstance(c, str) for c in group)):
            raise bad(name, "must be a list of column names")
    if meta.targets is None:
        if meta.past_covariates or meta.future_covariates:
            raise bad("targets", "must be given with covariates")
        return
    if not meta.targets or [*meta.targets, *(meta.past_covariates or []), *(meta.future_covariates or [])] != \
            meta.columns:
        raise bad("columns", "must be the targets, then the past and the future covariates")
    if meta.features == "S" and (meta.past_covariates or meta.future_covariates or meta.n_calendar):
        raise bad("features", "S has no covariates")


def _is_frequency(value: Any) -> bool:
    if fixed_step(value) is not None:
        return True
    import pandas as pd

    try:
        pd.tseries.frequencies.to_offset(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def model_meta(model_name: str, seq_len: int, horizon: int, columns: list[str], mean: np.ndarray, std: np.ndarray,
               freq: str, n_marks: int, mark_freq: str | None = None, roles: Any = None,
               n_calendar: int = 0) -> ModelMeta:
    """``roles`` (forecast.data.roles.Roles) when the columns are not all targets."""
    groups: dict[str, Any] = {}
    if roles is not None and not roles.is_default:
        groups = {"features": roles.features, "targets": list(roles.targets), "past_covariates": list(roles.past),
                  "future_covariates": list(roles.future), "n_calendar": n_calendar,
                  "ignored_columns": list(roles.ignored)}
    return ModelMeta(model_name=model_name, seq_len=seq_len, horizon=horizon, columns=list(columns),
                     mean=[float(v) for v in mean], std=[float(v) for v in std], freq=freq, n_marks=n_marks,
                     forecast_version=forecast.__version__, mark_freq=mark_freq, **groups)
