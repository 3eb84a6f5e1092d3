"""The LTSF-Linear family (Zeng et al., AAAI 2023): Linear, NLinear and DLinear.

All three map along the time axis only, one forecast per channel, and ignore time marks.
With ``orthotrans: true`` (OLinear's plug-in, arXiv 2505.08550) the same L->H maps act on the
coefficients of the lookback in the OrthoTrans basis ``Q_i``, and their output is mapped back with ``Q_o``;
the pipeline then supplies ``ctx.extras["q_in"] [L, L]`` and ``ctx.extras["q_out"] [H, H]``.

Covariates: the L->H maps read the targets only (the first ``N_t`` columns of x), as the papers' models read each
channel; past covariates (the other columns of x) and future covariates (over lookback and horizon) enter through one
:class:`~forecast.layers.covariates.CovariateMap` added to the targets' forecast (zero at init; absent without
covariates, so the papers' models are unchanged). Time marks are ignored; name ``calendar`` among the future
covariates to give the calendar to these models.
Contract: ``forward(x [B, L, N], x_mark, y_mark, future) -> [B, H, N_t]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from forecast.layers.covariates import CovariateMap
from forecast.layers.decomposition import SeriesDecomposition
from forecast.layers.orthotrans import OrthoTrans, orthotrans_needs
from forecast.models.registry import ModelContext, register


class TimeLinear(nn.Module):
    """``Linear(L -> H)`` along time: shared by all channels, or one per channel (``individual``)."""

    def __init__(self, seq_len: int, horizon: int, n_vars: int, individual: bool) -> None:
        super().__init__()
        self.individual = individual
        if individual:
            # One Linear(L->H) per channel, vectorized: weight [N, H, L], bias [N, H].
            bound = 1.0 / math.sqrt(seq_len)  # nn.Linear's default init
            self.weight = nn.Parameter(torch.empty(n_vars, horizon, seq_len).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(n_vars, horizon).uniform_(-bound, bound))
        else:
            self.linear = nn.Linear(seq_len, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, L, N] -> [B, H, N]
        if self.individual:
            return torch.einsum("bln,nhl->bhn", x, self.weight) + self.bias.t()
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def _ortho_or_none(enabled: bool, ctx: ModelContext, model: str) -> OrthoTrans | None:
    return OrthoTrans.from_extras(ctx.extras, ctx.seq_len, ctx.horizon, model) if enabled else None


def _with_covariates(cov: CovariateMap | None, targets: torch.Tensor, x: torch.Tensor,
                     future: torch.Tensor | None) -> torch.Tensor:
    """``targets [B, H, N_t]`` plus the covariates' share: the past covariates are x's columns after the targets."""
    return targets if cov is None else targets + cov(x[..., targets.shape[-1]:], future)


def _forecast(head: TimeLinear, ortho: OrthoTrans | None, x: torch.Tensor) -> torch.Tensor:
    """``head(x)``; with OrthoTrans, ``head`` maps basis coefficients: ``Q_o``-inverse(head(x Q_i^T)).

    x: [B, L, N] -> [B, H, N]
    """
    if ortho is None:
        return head(x)
    z = ortho.forward_transform(x.transpose(1, 2)).transpose(1, 2)  # [B, N, L] @ Q_i^T -> [B, L, N]
    z = head(z)  # [B, H, N], coefficients in the Q_o basis
    return ortho.inverse_transform(z.transpose(1, 2)).transpose(1, 2)  # [B, N, H] @ Q_o -> [B, H, N]


@dataclass(frozen=True)
class LinearConfig:
    individual: bool = False  # one L->H map per channel instead of one shared map
    revin: str = "none"  # none | plain | affine
    orthotrans: bool = False  # forecast in the OrthoTrans basis (needs ctx.extras q_in/q_out)


DLINEAR_INITS = ("default", "average")


@dataclass(frozen=True)
class DLinearConfig:
    individual: bool = False
    kernel_size: int = 25  # moving-average width; the paper hard-codes 25
    revin: str = "none"
    orthotrans: bool = False  # seasonal and trend each mapped in the OrthoTrans basis
    init: str = "default"  # default: nn.Linear's; average: the first release's (see DLinear)

    def __post_init__(self) -> None:
        if self.init not in DLINEAR_INITS:
            raise ValueError(f"init must be one of {', '.join(DLINEAR_INITS)}, got {self.init!r}")


@register("linear", LinearConfig, "Linear: one linear map L->H along time (LTSF-Linear)",
          extras=orthotrans_needs)
class Linear(nn.Module):
    def __init__(self, cfg: LinearConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.head = TimeLinear(ctx.seq_len, ctx.horizon, ctx.n_targets, cfg.individual)
        self.ortho = _ortho_or_none(cfg.orthotrans, ctx, "linear")
        self.covariates, self.n_targets = CovariateMap.of(ctx), ctx.n_targets

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        return _with_covariates(self.covariates, _forecast(self.head, self.ortho, x[..., : self.n_targets]), x, future)


@register("nlinear", LinearConfig, "NLinear: subtract the last value, linear map, add it back (LTSF-Linear)",
          extras=orthotrans_needs)
class NLinear(nn.Module):
    def __init__(self, cfg: LinearConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.head = TimeLinear(ctx.seq_len, ctx.horizon, ctx.n_targets, cfg.individual)
        self.ortho = _ortho_or_none(cfg.orthotrans, ctx, "nlinear")
        self.covariates, self.n_targets = CovariateMap.of(ctx), ctx.n_targets

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        targets = x[..., : self.n_targets]
        last = targets[:, -1:, :].detach()  # [B, 1, N_t]
        return _with_covariates(self.covariates, _forecast(self.head, self.ortho, targets - last) + last, x, future)


@register("dlinear", DLinearConfig, "DLinear: moving-average trend + seasonal, one linear map each (LTSF-Linear)",
          extras=orthotrans_needs)
class DLinear(nn.Module):
    """``init: average`` is the first release's start (cure-lab/LTSF-Linear at 92994e1; 7f7a25b left it as a comment):
    both maps begin as the mean of the lookback (every weight 1/L, the biases nn.Linear's), and that release also
    built a third, unused ``Linear_Decoder`` whose initial values are drawn here and thrown away, so a seed gives
    that release's run. The univariate results its scripts record (``scripts/EXP-LongForecasting/DLinear/univariate``,
    deleted at 7f7a25b) came from that code: ``--set model.init=average`` replays them."""

    def __init__(self, cfg: DLinearConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.decomp = SeriesDecomposition(cfg.kernel_size)
        self.seasonal = TimeLinear(ctx.seq_len, ctx.horizon, ctx.n_targets, cfg.individual)
        self.trend = TimeLinear(ctx.seq_len, ctx.horizon, ctx.n_targets, cfg.individual)
        if cfg.init == "average":
            _first_release_init(self.seasonal, self.trend, ctx)
        self.ortho = _ortho_or_none(cfg.orthotrans, ctx, "dlinear")
        self.covariates, self.n_targets = CovariateMap.of(ctx), ctx.n_targets

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        seasonal, trend = self.decomp(x[..., : self.n_targets])  # [B, L, N_t] each
        out = _forecast(self.seasonal, self.ortho, seasonal) + _forecast(self.trend, self.ortho, trend)
        return _with_covariates(self.covariates, out, x, future)


@torch.no_grad()
def _first_release_init(seasonal: TimeLinear, trend: TimeLinear, ctx: ModelContext) -> None:
    """Every weight of both maps 1/L. Shared maps first draw what the release's unused ``Linear_Decoder`` drew, so a
    seed gives its run; per-channel maps (``individual``) drew in another order there, so no seed replays those."""
    if not seasonal.individual:
        nn.Linear(ctx.seq_len, ctx.horizon)  # its draws only
    for head in (seasonal, trend):
        (head.weight if head.individual else head.linear.weight).fill_(1.0 / ctx.seq_len)
