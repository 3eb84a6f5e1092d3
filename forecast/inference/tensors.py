"""From an artifact's metadata and an input table to the model's tensors, and from its output back to original
units: the scaling, time features and future covariates exactly as training builds them."""

from __future__ import annotations

import numpy as np
import torch

from forecast.artifact import ModelMeta
from forecast.data.timefeatures import time_features
from forecast.errors import ForecastError


def scaled(meta: ModelMeta, values: np.ndarray, first: int = 0) -> np.ndarray:
    """Standardize columns ``first, first + 1, ...`` of the model with the train scaler exactly as training does
    (float64 arithmetic, float32 result)."""
    cols = slice(first, first + values.shape[1])
    return ((values - np.asarray(meta.mean)[cols]) / np.asarray(meta.std)[cols]).astype(np.float32)


def marks(meta: ModelMeta, dates: np.ndarray, n: int | None = None) -> torch.Tensor | None:
    """``[T, n]`` time features of ``dates`` (the model's ``n_marks`` by default); None when it reads none."""
    n = meta.n_marks if n is None else n
    if n == 0:
        return None
    freq = meta.mark_freq or meta.freq
    out = time_features(dates, freq)
    if out.shape[1] != n:
        raise ForecastError(f"the model expects {n} time features at '{freq}' but this forecast "
                            f"version computes {out.shape[1]}; use the forecast version that trained it.")
    return torch.from_numpy(out)


def future_covariates(meta: ModelMeta, dates: np.ndarray, values: np.ndarray) -> torch.Tensor | None:
    """``[T, F]``: the future-covariate columns ``values [T, n_f]`` (original units) standardized, then the
    calendar of ``dates``; None for a model without future covariates."""
    if not meta.n_future:
        return None
    parts = [torch.from_numpy(scaled(meta, values, meta.n_inputs))] if meta.future_columns else []
    calendar = marks(meta, dates, meta.n_calendar)
    return torch.cat(parts + ([calendar] if calendar is not None else []), dim=1)


def original_units(meta: ModelMeta, values: np.ndarray) -> np.ndarray:
    """``[..., N_t]`` standardized forecasts of the targets in original units (float64)."""
    n = meta.n_targets
    return values.astype(np.float64) * np.asarray(meta.std)[:n] + np.asarray(meta.mean)[:n]


def steps(meta: ModelMeta, horizon: int | None) -> int:
    """The steps to forecast; ``horizon`` was checked against the model once, where the user gave it."""
    h = meta.horizon if horizon is None else horizon
    assert 1 <= h <= meta.horizon, f"horizon {h} not checked against H={meta.horizon}"
    return h
