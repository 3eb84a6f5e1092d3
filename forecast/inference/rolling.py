"""``forecast predict --rolling``: forecast from every stride-1 window of an input and score the forecasts against
the actuals the input holds, as training scores its test split: MSE and MAE, each conformal interval's coverage and
width, and CRPS, on the standardized scale and in original units. ``adaptive`` adds intervals that adapt as the
actuals arrive (:func:`forecast.conformal.online_widths`) and scores them beside the static ones."""

from __future__ import annotations

import numpy as np
import torch

from forecast.artifact import LoadedModel
from forecast.conformal import (
    CRPS_LEVELS,
    crps_rows,
    crps_sums,
    level_name,
    model_crps_sums,
    online_widths,
    probts_levels,
    put_model_crps,
)
from forecast.data.loading import Table
from forecast.data.timefeatures import future_dates
from forecast.data.windows import WindowDataset, batch_sampler, window_count
from forecast.errors import ForecastError
from forecast.inference.io import Rolling
from forecast.inference.tensors import future_covariates, marks, original_units, scaled, steps

ADAPTIVE_RATE = 0.05  # the trackers' step: a miss widens an interval by 5% of its static width (x its level)
CHUNK = 256  # windows scored at once on the adaptive pass


def default_levels(lm: LoadedModel) -> tuple[float, ...]:
    """The levels a rolling forecast scores unless told: the run's ``train.intervals`` that the model stores."""
    calibrated = lm.intervals[0] if lm.intervals else ()
    asked = (lm.config.get("train") or {}).get("intervals") or ()
    return tuple(lv for lv in calibrated if any(abs(lv - float(a)) < 1e-9 for a in asked))


class _Scores:
    """Sums over scored windows: coverage and width per level, CRPS; ``widths [B or 1, K, h, N]`` standardized."""

    def __init__(self, levels: tuple[float, ...], scored: list[int], crps: list[int] | None, std: torch.Tensor,
                 mean: torch.Tensor) -> None:
        self.levels, self.scored, self.crps, self.std, self.mean = levels, scored, crps, std, mean
        self.sums = torch.zeros(3 * len(scored) + 2, dtype=torch.float64)
        self.cells = 0

    def add(self, pred: torch.Tensor, y: torch.Tensor, widths: torch.Tensor) -> None:
        pred, y = pred.double(), y.double()
        widths = widths.double().expand(pred.shape[0], *widths.shape[1:])
        w = widths[:, self.scored]  # [B, S, h, N]
        inside = ((pred - y).abs()[:, None] <= w).sum(dim=(0, 2, 3))
        parts = [inside, 2 * w.sum(dim=(0, 2, 3)), 2 * (w * self.std).sum(dim=(0, 2, 3))]
        if self.crps is not None:
            parts.append(crps_sums(pred, y, widths[:, self.crps], self.mean, self.std))
        else:
            parts.append(torch.zeros(2, dtype=torch.float64))
        self.sums += torch.cat(parts)
        self.cells += y.numel()

    def metrics(self, windows: int, prefix: str = "") -> dict[str, float]:
        s, S = self.sums.tolist(), len(self.scored)
        out = {}
        for k, i in enumerate(self.scored):
            name = level_name(self.levels[i])
            out[f"{prefix}coverage_{name}"] = s[k] / self.cells
            out[f"{prefix}width_{name}"] = s[S + k] / self.cells
            out[f"{prefix}width_{name}_orig"] = s[2 * S + k] / self.cells
        if self.crps is not None:
            out[f"{prefix}crps"], out[f"{prefix}crps_orig"] = s[3 * S] / windows, s[3 * S + 1] / windows
        return out


def rolling_forecast(lm: LoadedModel, table: Table, horizon: int | None = None, batch_size: int | None = None,
                     keep: bool = True, future: np.ndarray | None = None, levels: tuple[float, ...] = (),
                     adaptive: float | None = None) -> Rolling:
    """Forecast from every stride-1 window of ``table`` in batches (one gather per batch, no per-window loop).

    The input is padded with the H future timestamps (values NaN), so the last window's forecast runs past the
    data; a model with future covariates reads them there from ``future [H, n_f]``, and without it only the windows
    whose horizon lies in the input are forecast. Windows whose first ``h`` targets lie in the input are scored
    exactly like training's test metrics. ``levels``: the intervals to write beside the forecasts (and to score;
    the run's ``train.intervals`` are scored when none are given); ``adaptive``: the trackers' rate, for intervals
    that adapt as the actuals arrive (those are then the ones written).
    """
    meta = lm.meta
    h = steps(meta, horizon)
    L, H, k, n_t = meta.seq_len, meta.horizon, meta.n_inputs, meta.n_targets
    T = len(table.dates)
    pad = H if (future is not None or not meta.future_columns) else 0
    if T + pad < L + H:
        raise ForecastError(f"--rolling without --future needs L + H = {L + H} rows for a model with future "
                            f"covariates, the input has {T}; give more history or --future.")
    fut = future_dates(table.dates[-1], meta.freq, H).astype("datetime64[ns]")[:pad]
    all_dates = np.concatenate([table.dates.astype("datetime64[ns]"), fut])
    values = np.concatenate([scaled(meta, table.values[:, :k]), np.full((pad, k), np.nan, np.float32)])
    rows = np.concatenate([table.values[:, k:], future if future is not None else np.empty((pad, meta.n_vars - k))])
    ds = WindowDataset(torch.from_numpy(values), marks(meta, all_dates), 0, T + pad, L, H, n_t,
                       future_covariates(meta, all_dates, rows))
    n_windows, n_scored = len(ds), max(window_count(0, T, L, h), 0)
    size = batch_size or int((lm.config.get("train") or {}).get("eval_batch_size", 256))
    cal_levels, static = lm.intervals if lm.intervals else ((), np.zeros((0, H, n_t), np.float32))
    static = torch.from_numpy(np.ascontiguousarray(static[:, :h]))  # [K, h, N]
    scored = [cal_levels.index(lv) for lv in (levels or default_levels(lm))]
    crps = [cal_levels.index(lv) for lv in CRPS_LEVELS] if set(CRPS_LEVELS) <= set(cal_levels) else None
    std, mean = (torch.as_tensor(np.asarray(v[:n_t]), dtype=torch.float64) for v in (meta.std, meta.mean))
    fixed = _Scores(cal_levels, scored, crps, std, mean)
    own = probts_levels(lm.quantiles or ())  # a nine-level quantile model: scored on its own quantiles too
    own_crps = torch.zeros(2, dtype=torch.float64)
    keep_pred = keep or adaptive is not None
    out = np.empty((n_windows, h, n_t), np.float32) if keep_pred else None
    sums = torch.zeros(4, dtype=torch.float64)  # sse, sae, sse_orig, sae_orig
    for idx in batch_sampler(ds, size, shuffle=False):
        batch = ds[idx]
        pred = lm.forward_scaled(batch["x"], batch.get("x_mark"), batch.get("y_mark"), full=own is not None,
                                 future=batch.get("future"))[:, :h]
        levels_out, pred = (pred, pred[..., lm.quantiles.index(0.5)]) if own is not None else (None, pred)
        if out is not None:
            out[idx[0]: idx[-1] + 1] = pred.numpy()
        n_in = min(len(idx), max(n_scored - idx[0], 0))  # windows of this (ordered) batch with actuals
        if n_in:
            err = pred[:n_in] - batch["y"][:n_in, :h]
            err_orig = err * std.float()
            sums += torch.stack([err.double().pow(2).sum(), err.double().abs().sum(),
                                 err_orig.double().pow(2).sum(), err_orig.double().abs().sum()])
            if len(cal_levels):
                fixed.add(pred[:n_in], batch["y"][:n_in, :h], static[None])
            if levels_out is not None:
                own_crps += model_crps_sums(levels_out[:n_in, ..., own], batch["y"][:n_in, :h], mean, std)
    metrics: dict[str, float] = {}
    if n_scored:
        n = float(n_scored * h * n_t)
        sse, sae, sse_o, sae_o = (float(v) / n for v in sums)
        metrics = {"mse": sse, "mae": sae, "mse_orig": sse_o, "mae_orig": sae_o, "windows": float(n_scored)}
        if len(cal_levels):
            metrics.update(fixed.metrics(n_scored))
        if own is not None:  # as the test pass reports it: the model's CRPS, the intervals' as crps_conformal
            put_model_crps(metrics, *(float(v) / n_scored for v in own_crps))
    bounds = {lv: static[cal_levels.index(lv)].numpy() for lv in levels}  # [h, N] standardized half-widths
    if adaptive is not None and len(cal_levels) and out is not None:
        actual = np.lib.stride_tricks.sliding_window_view(values[L:, :n_t], h, axis=0)[:n_windows].transpose(0, 2, 1)
        moving = _Scores(cal_levels, scored, crps, std, mean)
        half = {lv: np.empty((n_windows, h, n_t), np.float32) for lv in levels} if keep else {}
        tracker = online_widths(np.abs(out - actual), static.numpy().astype(np.float64), cal_levels, adaptive)
        for start in range(0, n_windows, CHUNK):
            chunk = np.stack([next(tracker) for _ in range(min(CHUNK, n_windows - start))])  # [B, K, h, N]
            for lv, arr in half.items():
                arr[start: start + len(chunk)] = chunk[:, cal_levels.index(lv)]
            n_in = min(len(chunk), max(n_scored - start, 0))
            if n_in:
                moving.add(torch.from_numpy(out[start: start + n_in]),
                           torch.from_numpy(np.ascontiguousarray(actual[start: start + n_in])),
                           torch.from_numpy(chunk[:n_in]))
        if n_scored:
            metrics.update({**moving.metrics(n_scored, "adaptive_"), "adaptive_rate": float(adaptive)})
        bounds = half
    target = np.arange(n_windows)[:, None] + L + np.arange(h)[None, :]
    forecasts = None if out is None or not keep else original_units(meta, out)
    spread = {lv: w * std.numpy()[:n_t] for lv, w in bounds.items()}  # original units
    limits = {lv: (forecasts - w, forecasts + w) for lv, w in spread.items()} if forecasts is not None else {}
    return Rolling(all_dates[L - 1: L - 1 + n_windows], all_dates[target], forecasts, meta.target_columns,
                   n_windows, n_scored, metrics, limits)


def interval_rows(metrics: dict[str, float]) -> list[tuple[str, object, object]]:
    """``(metric, standardized, original units)`` rows of a rolling forecast's interval scores, for the table
    ``forecast predict --rolling`` prints: coverage (the same on both scales) and mean width per level, CRPS; the
    adaptive intervals' after the static ones."""
    rows: list[tuple[str, object, object]] = []
    for prefix, label in (("", ""), ("adaptive_", "adaptive ")):
        for key in [k for k in metrics if k.startswith(f"{prefix}coverage_")]:
            name = key.removeprefix(f"{prefix}coverage_")
            rows.append((f"{label}coverage {name}%", metrics[key], metrics[key]))
            rows.append((f"{label}width {name}%", metrics[f"{prefix}width_{name}"],
                         metrics[f"{prefix}width_{name}_orig"]))
        rows += crps_rows(metrics, prefix, label)
    return rows
