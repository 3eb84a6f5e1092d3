"""Split-conformal prediction intervals for any trained point forecaster (Vovk et al. 2005; Lei et al. 2018).

After training, the best weights have forecast every validation window (the best epoch's validation pass made those
forecasts and the run kept them; else one more pass makes them); for each horizon step ``h`` and variate ``n`` the
absolute residuals ``|y - ŷ|`` of those ``W`` windows give the half-width of the level-``α`` interval as their
``⌈(W + 1) α⌉``-th smallest value (infinite when that rank exceeds ``W``). The interval ``ŷ ± w`` then covers a new
target with probability at least ``α`` **if the residuals are exchangeable**: the validation and test windows come
from one distribution. A chronological split bends that assumption (a test period can be calmer or wilder than the
validation period), so the test coverage is measured and logged next to the nominal level, never assumed.

Everything is on the standardized scale; original units are ``w * std``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from forecast.models import placement, run_batch


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the order statistic that is the level-``level`` half-width among ``n`` residuals."""
    return math.ceil((n + 1) * level)


def min_windows(level: float) -> int:
    """The fewest validation windows that bound a level-``level`` interval (rank ≤ n): 4 at 0.8, 9 at 0.9, 19 at
    0.95; with fewer its half-width is infinite, as split conformal's guarantee asks."""
    return next(n for n in itertools.count(1) if conformal_rank(n, level) <= n)


@torch.no_grad()  # torch's decorator sets the mode around each step of a generator, so none leaks to the caller
def forecasts_of(model: torch.nn.Module, windows, batch_size: int = 256,  # noqa: ANN001
                 point: Callable[[torch.Tensor], torch.Tensor] = lambda p: p) -> Iterator[torch.Tensor]:
    """The point forecasts ``[B, H, N]`` of ``model`` on every window of a WindowDataset, in order, batch by batch
    (eval mode, no gradients); ``point`` takes the point forecast out of the model's output (a quantile model's
    median)."""
    was_training = model.training
    model.eval()
    device, dtype = placement(model)
    try:
        for batch in windows.in_order(batch_size):
            yield point(run_batch(model, batch, device, dtype))
    finally:
        model.train(was_training)


@torch.no_grad()
def residuals(model: torch.nn.Module, windows, batch_size: int = 256,  # noqa: ANN001
              point: Callable[[torch.Tensor], torch.Tensor] = lambda p: p,
              forecasts: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
    """``|y - ŷ|`` ``[W, H, N]`` float32 on every window of a WindowDataset: of ``forecasts`` (every window's point
    forecast, in order, in batches: the best epoch's validation pass, kept while training) or else of a pass of
    ``model`` (:func:`forecasts_of`). Written batch by batch into ``[H·N, W]`` rows (returned as a transposed
    view), so :func:`half_widths` sorts them without a transposing copy."""
    if forecasts is None:
        forecasts = forecasts_of(model, windows, batch_size, point)
    targets = windows.targets()  # [W, H, N], a view of the series
    rows, start = torch.empty((targets[0].numel(), len(windows)), dtype=torch.float32), 0  # one row per step, variate
    for pred in forecasts:
        end = start + len(pred)
        if end > len(windows) or pred.shape[1:] != targets.shape[1:]:
            raise ValueError(f"forecasts of shape {tuple(pred.shape)} at window {start} do not match the "
                             f"{len(windows)} windows {tuple(targets.shape[1:])}")
        err = (pred.to("cpu", torch.float32) - targets[start:end]).abs()
        rows[:, start:end] = err.reshape(len(err), -1).T
        start = end
    if start != len(windows):
        raise ValueError(f"forecasts for {start} of {len(windows)} windows")
    return rows.T.view(len(windows), *targets.shape[1:])  # [W, H, N], a view of the rows


def half_widths(abs_residuals: torch.Tensor, levels: tuple[float, ...]) -> np.ndarray:
    """``[K, H, N]`` float32: the level-``α`` half-width per step and variate for each of the ``K`` levels.

    One sort of each step's and variate's residuals, laid out contiguously (a row per column of residuals), then
    every rank read off it: numpy's vectorized sort of contiguous rows is about 4x faster than ``np.partition``
    down the strided window axis at five ranks, and gives the same order statistics."""
    n, shape = abs_residuals.shape[0], tuple(abs_residuals.shape[1:])
    ranks = [conformal_rank(n, level) for level in levels]
    rows = np.array(abs_residuals.detach().cpu().reshape(n, -1).numpy().T, order="C")  # [H·N, W], a copy: sorted
    rows.sort(axis=1)
    out = [rows[:, k - 1] if k <= n else np.full(rows.shape[0], np.inf, np.float32) for k in ranks]
    return np.stack(out).reshape(len(levels), *shape).astype(np.float32) if out else np.zeros((0, *shape), np.float32)


def calibrate(model: torch.nn.Module, windows, batch_size: int,  # noqa: ANN001
              point: Callable[[torch.Tensor], torch.Tensor], levels: tuple[float, ...],
              forecasts: Iterable[torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The half-widths ``[K, H, N]`` at ``levels`` and ``[4, H, N]`` at :data:`CRPS_LEVELS`, from the residuals of
    every window of ``windows`` (the validation split) and one selection: of ``forecasts`` when the run kept its
    best epoch's validation forecasts (no pass at all), else of one pass of ``model``."""
    widths = half_widths(residuals(model, windows, batch_size, point, forecasts), (*levels, *CRPS_LEVELS))
    return widths[:len(levels)], widths[len(levels):]


def artifact_intervals(levels: tuple[float, ...], widths: np.ndarray, crps_widths: np.ndarray | None
                       ) -> tuple[tuple[float, ...], np.ndarray]:
    """The levels a model artifact stores: those asked for (``train.intervals``) and the :data:`CRPS_LEVELS`, sorted,
    with their half-widths ``[K, H, N]``; every one is a split-conformal interval on the same validation residuals,
    so predict can ask for any of them and ``--rolling`` can score CRPS. Nothing when no interval was asked for."""
    if not levels:
        return (), widths
    merged = dict(zip(levels, widths))
    if crps_widths is not None:
        merged.update((lv, w) for lv, w in zip(CRPS_LEVELS, crps_widths) if lv not in merged)
    order = sorted(merged)
    return tuple(order), np.stack([np.asarray(merged[lv], np.float32) for lv in order])


def level_name(level: float) -> str:
    """``80`` for 0.8, ``97.5`` for 0.975: the suffix of metric and column names."""
    pct = round(level * 100, 6)
    return f"{pct:g}"


# CRPS as ProbTS computes it (probts/utils/evaluator.py): the nine quantile levels 0.1, ..., 0.9, each scored by the
# quantile loss 2·Σ|(y − ŷ_q)(1[y ≤ ŷ_q] − q)| over a window's steps and variates, divided by Σ|y| of that window;
# CRPS is their mean over the levels, averaged over the windows. The quantiles come from symmetric conformal
# intervals: ŷ_q = ŷ − w_α for q = (1 − α)/2 and ŷ + w_α for q = (1 + α)/2, ŷ itself for the median.
CRPS_LEVELS = (0.2, 0.4, 0.6, 0.8)  # the central intervals whose edges are the quantiles 0.1, ..., 0.9
CRPS_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def quantile_forecasts(pred: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """``[9, B, H, N]``: the forecast at :data:`CRPS_QUANTILES` from ``pred [B, H, N]`` and the half-widths
    ``widths [4, H, N]`` of the :data:`CRPS_LEVELS` intervals."""
    lower = [pred - widths[k] for k in range(len(CRPS_LEVELS) - 1, -1, -1)]  # q = 0.1 (the widest), ..., 0.4
    upper = [pred + widths[k] for k in range(len(CRPS_LEVELS))]  # q = 0.6, ..., 0.9
    return torch.stack([*lower, pred, *upper])


def probts_levels(quantiles: tuple[float, ...]) -> list[int] | None:
    """Where :data:`CRPS_QUANTILES` sit among a quantile model's levels, or None unless it has all nine."""
    found = [next((i for i, q in enumerate(quantiles) if abs(q - want) < 1e-9), None) for want in CRPS_QUANTILES]
    return None if None in found else found


def model_crps_sums(quantiles: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[2]`` float64: the sums over the ``B`` windows of :func:`window_crps` of a quantile model's own forecasts
    ``quantiles [B, H, N, 9]`` at :data:`CRPS_QUANTILES`, standardized and in original units (``mean, std [N]``)."""
    qf, y = quantiles.double().movedim(-1, 0), y.double()  # [9, B, H, N]
    mean, std = mean.to(y), std.to(y)
    return torch.stack([window_crps(qf, y).sum(), window_crps(qf * std + mean, y * std + mean).sum()])


def put_model_crps(metrics: dict[str, float], crps: float, crps_orig: float, prefix: str = "") -> None:
    """A nine-level quantile model's own CRPS takes the ``{prefix}crps`` names in ``metrics``; the conformal
    intervals' CRPS, where there is one, moves to ``{prefix}crps_conformal``: what the test pass and ``--rolling``
    both report."""
    for suffix in ("", "_orig"):
        if f"{prefix}crps{suffix}" in metrics:
            metrics[f"{prefix}crps_conformal{suffix}"] = metrics[f"{prefix}crps{suffix}"]
    metrics[f"{prefix}crps"], metrics[f"{prefix}crps_orig"] = crps, crps_orig


def crps_rows(metrics: dict[str, float], prefix: str = "", label: str = "") -> list[tuple[str, float, float]]:
    """``(name, standardized, original units)`` table rows of the CRPS in ``metrics`` under ``prefix``: the CRPS,
    then the conformal intervals' beside a nine-level quantile model's own (:func:`put_model_crps`'s names)."""
    names = {f"{prefix}crps": f"{label}CRPS", f"{prefix}crps_conformal": f"{label}CRPS, conformal"}
    return [(name, metrics[key], metrics[f"{key}_orig"]) for key, name in names.items() if key in metrics]


def window_crps(quantiles: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]``: each window's CRPS (ProbTS's definition, above) from ``quantiles [9, B, H, N]`` and ``y [B, H, N]``."""
    q = torch.tensor(CRPS_QUANTILES, dtype=y.dtype, device=y.device).view(-1, 1, 1, 1)
    loss = 2 * ((y - quantiles) * ((y <= quantiles).to(y.dtype) - q)).abs().sum(dim=(2, 3))  # [9, B]
    return loss.mean(dim=0) / y.abs().sum(dim=(1, 2))


def crps_sums(pred: torch.Tensor, y: torch.Tensor, widths: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
              ) -> torch.Tensor:
    """``[2]`` float64: the sums over the ``B`` windows of :func:`window_crps` of :func:`quantile_forecasts`,
    standardized and in original units, from ``pred, y [B, H, N]`` and the :data:`CRPS_LEVELS` half-widths
    ``widths [4, H, N]`` (or per window, ``[B, 4, H, N]``); ``mean, std [N]``: the scaler.

    The same numbers without the nine quantile forecasts: the quantile loss of ``u = y − ŷ_q`` is
    ``q·u + relu(−u)``; it is positively homogeneous (in original units every ``u`` is the standardized one times
    ``std``, the mean cancels), so one pass over the levels gives both scales, in place, without building
    ``[9, B, H, N]`` twice (which was most of a test pass)."""
    pred, y = pred.double(), y.double()
    mean, std = mean.to(y).double(), std.to(y).double()
    err = y - pred
    neg = -err
    # the median's loss, then each level's pair: q·u at ŷ − w (q = (1 − α)/2, u = err + w) and at ŷ + w
    # (q = (1 + α)/2, u = err − w) sum to err − α·w; their relu(−u) terms follow
    loss = 0.5 * err.abs() + len(CRPS_LEVELS) * err
    for k, level in enumerate(CRPS_LEVELS):
        w = widths.select(-3, k).to(err)
        loss -= level * w
        loss += torch.relu_(neg - w)
        loss += torch.relu_(w - err)
    n_levels = 2 * len(CRPS_LEVELS) + 1
    crps = 2 * loss.sum(dim=(1, 2)) / n_levels / y.abs().sum(dim=(1, 2))
    crps_orig = 2 * (loss * std).sum(dim=(1, 2)) / n_levels / (y * std + mean).abs().sum(dim=(1, 2))
    return torch.stack([crps.sum(), crps_orig.sum()])


def online_widths(abs_err: np.ndarray, static: np.ndarray, levels: tuple[float, ...], rate: float
                  ) -> Iterator[np.ndarray]:
    """Intervals that adapt as the actuals arrive: online quantile tracking on the split-conformal intervals (the
    "P" of conformal PID control, Angelopoulos et al. 2023, in the spirit of adaptive conformal inference, Gibbs and
    Candès 2021).

    ``abs_err [W, h, N]``: the absolute residuals of consecutive stride-1 windows in time order (NaN where the actual
    is not known); ``static [K, h, N]``: the split-conformal half-widths at ``levels`` (increasing). Yields, window
    by window, the half-widths ``[K, h, N]`` it forecasts with: ``s · static``, where the scale ``s`` of each level,
    step and variate starts at 1. The actual of step ``j`` of window ``t`` is observed from window ``t + j + 1`` on;
    then ``s += rate · (miss − (1 − level))``, floored at 0, so ``s`` grows after a miss and shrinks slowly while
    the targets fall inside. Whatever the residuals do, the long-run miss rate of each tracker is within
    ``(max s + rate) / (rate · T)`` of ``1 − level`` (plus the delay's share), so coverage follows a val-to-test
    shift instead of keeping the validation period's. The levels stay nested (a wider level never narrower).
    A window's half-width reads only the residuals observed before it.
    """
    W, h, N = abs_err.shape
    scale = np.ones(static.shape)
    target = 1.0 - np.asarray(levels, np.float64)[:, None, None]
    finite = np.isfinite(static)
    missed = np.zeros((h, *static.shape), bool)  # ring buffer: the misses of the last h windows
    observed = np.zeros((h, h, N), bool)
    steps = np.arange(h)
    for t in range(W):
        widths = np.maximum.accumulate(np.where(finite, scale * np.where(finite, static, 0.0), np.inf), axis=0)
        yield widths
        err = abs_err[t]
        missed[t % h] = err[None] > widths  # NaN compares False; masked out below
        observed[t % h] = ~np.isnan(err)
        rows = (t - steps) % h  # the actuals now arriving: step j of window t - j
        arrived = observed[rows, steps] & (steps <= t)[:, None]  # [h, N]
        miss = missed[rows, :, steps].transpose(1, 0, 2)  # [K, h, N]
        scale += rate * (miss - target) * arrived[None]
        np.maximum(scale, 0.0, out=scale)
