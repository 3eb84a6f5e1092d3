"""Reversible instance normalization (RevIN, Kim et al. 2022), affine and non-affine.

This is the one implementation in the project. It is applied in one place, :class:`Forecaster`,
which every model built by ``create_model`` goes through when its config asks for ``revin``.
The non-affine form is the "Non-stationary Transformer" normalization used by iTransformer and S-Mamba.
"""

from __future__ import annotations

import torch
from torch import nn

REVIN_MODES = ("none", "plain", "affine")


class RevIN(nn.Module):
    def __init__(self, n_vars: int, affine: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.gamma = nn.Parameter(torch.ones(n_vars))
            self.beta = nn.Parameter(torch.zeros(n_vars))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # x: [B, L, N]; statistics over L, per (batch, variate), detached.
        mu = x.mean(dim=1, keepdim=True).detach()  # [B, 1, N]
        sigma = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()  # [B, 1, N]
        z = (x - mu) / sigma
        if self.affine:
            z = z * self.gamma + self.beta
        return z, (mu, sigma)

    def denormalize(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # y: [B, H, N_t], the forecast of the first N_t variates (the targets; the rest were past covariates)
        n = y.shape[-1]
        mu, sigma = stats[0][..., :n], stats[1][..., :n]
        if self.affine:
            y = (y - self.beta[:n]) / (self.gamma[:n] + self.eps * self.eps)
        return y * sigma + mu


class Forecaster(nn.Module):
    """A backbone plus optional RevIN around it. What ``create_model`` returns for every model.

    forward(x [B, L, N], x_mark [B, L, C] | None, y_mark [B, H, C] | None, future [B, L+H, F] | None)
    -> [B, H, N_t]. RevIN normalizes every lookback column and denormalizes the forecast with the targets' own
    statistics; future covariates pass as they are. ``fold`` (the S setting): each of the N variates is forecast
    alone by a backbone built for one, as a batch of ``B * N`` univariate windows.
    """

    def __init__(self, backbone: nn.Module, n_vars: int, revin: str = "none", fold: bool = False) -> None:
        super().__init__()
        if revin not in REVIN_MODES:
            raise ValueError(f"revin must be one of {REVIN_MODES}, got {revin!r}")
        self.backbone = backbone
        self.fold = fold
        self.revin = RevIN(n_vars, affine=(revin == "affine")) if revin != "none" else None

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None, y_mark: torch.Tensor | None = None,
                future: torch.Tensor | None = None) -> torch.Tensor:
        if self.fold:  # [B, L, N] -> [B * N, L, 1]: row b * N + n is variate n of window b
            B, L, N = x.shape
            x = x.transpose(1, 2).reshape(B * N, L, 1)
            x_mark, y_mark = (None if m is None else m.repeat_interleave(N, dim=0) for m in (x_mark, y_mark))
            return self._forward(x, x_mark, y_mark, None).reshape(B, N, -1).transpose(1, 2)
        return self._forward(x, x_mark, y_mark, future)

    def _forward(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None,
                 future: torch.Tensor | None) -> torch.Tensor:
        if self.revin is None:
            return self.backbone(x, x_mark, y_mark, future)
        z, stats = self.revin.normalize(x)
        return self.revin.denormalize(self.backbone(z, x_mark, y_mark, future), stats)
