"""Moving-average series decomposition (Autoformer/DLinear), with edge-replicated padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeriesDecomposition(nn.Module):
    """Split ``x [B, L, N]`` into (seasonal, trend), both ``[B, L, N]``, with ``seasonal + trend == x``.

    The trend is a stride-1 moving average of odd width ``kernel_size``; each end is padded with
    ``(k - 1) / 2`` copies of the first and last step (edge replication, not zeros).
    """

    def __init__(self, kernel_size: int = 25) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = (self.kernel_size - 1) // 2
        xt = x.transpose(1, 2)  # [B, N, L]
        padded = F.pad(xt, (pad, pad), mode="replicate")  # [B, N, L + 2*pad]
        trend = F.avg_pool1d(padded, kernel_size=self.kernel_size, stride=1).transpose(1, 2)  # [B, L, N]
        return x - trend, trend
