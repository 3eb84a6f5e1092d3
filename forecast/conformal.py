"""Split-conformal prediction intervals for any trained point forecaster (Vovk et al. 2005; Lei et al. 2018).

After training, the model forecasts every validation window; for each horizon step ``h`` and variate ``n`` the
absolute residuals ``|y - ŷ|`` of those ``W`` windows give the half-width of the level-``α`` interval as their
``⌈(W + 1) α⌉``-th smallest value (infinite when that rank exceeds ``W``). The interval ``ŷ ± w`` then covers a new
target with probability at least ``α`` **if the residuals are exchangeable**: the validation and test windows come
from one distribution. A chronological split bends that assumption (a test period can be calmer or wilder than
the validation period), so the test coverage is measured and logged next to the nominal level, never assumed.

Everything is on the standardized scale; original units are ``w * std``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from forecast.models import run_batch


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank of the order statistic that is the level-``level`` half-width among ``n`` residuals."""
    return math.ceil((n + 1) * level)


@torch.no_grad()
def residuals(model: torch.nn.Module, windows, batch_size: int = 256,  # noqa: ANN001
              point: Callable[[torch.Tensor], torch.Tensor] = lambda p: p) -> torch.Tensor:
    """``|y - ŷ|`` ``[W, H, N]`` of ``model`` on every window of a WindowDataset (eval mode, no gradients);
    ``point`` takes the point forecast out of the model's output (a quantile model's median)."""
    was_training = model.training
    model.eval()
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    out = []
    for batch in windows.in_order(batch_size):
        pred = point(run_batch(model, batch, device))
        out.append((pred - batch["y"].to(device)).abs().float().cpu())
    model.train(was_training)
    return torch.cat(out)


def half_widths(abs_residuals: torch.Tensor, levels: tuple[float, ...]) -> np.ndarray:
    """``[K, H, N]`` float32: the level-``α`` half-width per step and variate for each of the ``K`` levels."""
    n = abs_residuals.shape[0]
    ordered = torch.sort(abs_residuals, dim=0).values  # [W, H, N]
    out = []
    for level in levels:
        k = conformal_rank(n, level)
        out.append(ordered[k - 1] if k <= n else torch.full_like(ordered[0], math.inf))
    return torch.stack(out).numpy().astype(np.float32)


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


def window_crps(quantiles: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B]``: each window's CRPS (ProbTS's definition, above) from ``quantiles [9, B, H, N]`` and ``y [B, H, N]``."""
    q = torch.tensor(CRPS_QUANTILES, dtype=y.dtype, device=y.device).view(-1, 1, 1, 1)
    loss = 2 * ((y - quantiles) * ((y <= quantiles).to(y.dtype) - q)).abs().sum(dim=(2, 3))  # [9, B]
    return loss.mean(dim=0) / y.abs().sum(dim=(1, 2))
