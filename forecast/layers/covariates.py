"""How the models read covariates (forecast.data.roles): two blocks that the model files share.

- :class:`CovariateMap` (the Linear family): a linear map from the covariate windows, the past covariates over the
  lookback ``[B, L, P]`` and the future covariates over lookback and horizon ``[B, L+H, F]``, into each target's
  forecast ``[B, H, N_t]``. It starts at zero, so an untrained model is the model without covariates.
- :class:`FutureTokens` (the inverted models, in the spirit of TimeXer): each future covariate's whole series over
  lookback and horizon becomes one more token, ``Linear(L + H -> D)``, mixed with the variate tokens.

Neither reads a target: a target's future never enters (the window's ``x`` stops at the origin).
"""

from __future__ import annotations

import torch
from torch import nn


class CovariateMap(nn.Module):
    """``(past [B, L, P] | None, future [B, L+H, F] | None) -> [B, H, N_t]``, zero at init.

    Each covariate's window, less its value at the origin (so a level shift between train and test moves nothing,
    as NLinear does for a target), is mapped to H steps by one ``Linear`` shared by all past covariates
    (``L -> H``) and one shared by all future covariates (``L+H -> H``); a learned ``[P + F, N_t]`` matrix, zero at
    init, mixes them into each target. Shared maps keep the count of weights at ``L·H + (L+H)·H + (P+F)·N_t``
    rather than one map per covariate and target, which overfits: measured in benchmarks/results/covariates.md.
    Its weights learn at their own rate, ``train.covariate_lr`` (their own Adam group,
    ``train.objective.param_groups``): at the targets' lr they fit the train months from the first epoch
    (benchmarks/results/covariate_lr.md).
    """

    def __init__(self, seq_len: int, horizon: int, n_past: int, n_future: int, n_targets: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.past = nn.Linear(seq_len, horizon) if n_past else None
        self.future = nn.Linear(seq_len + horizon, horizon) if n_future else None
        self.mix = nn.Parameter(torch.zeros(n_past + n_future, n_targets))

    @classmethod
    def of(cls, ctx) -> CovariateMap | None:  # noqa: ANN001 (a ModelContext; layers sit below the registry)
        """The map for ``ctx``'s covariates, or None when it has none (the state dict stays the papers')."""
        if not ctx.n_past and not ctx.n_future:
            return None
        return cls(ctx.seq_len, ctx.horizon, ctx.n_past, ctx.n_future, ctx.n_targets)

    def forward(self, past: torch.Tensor | None, future: torch.Tensor | None) -> torch.Tensor:
        origin = self.seq_len - 1  # the last observed step
        parts = []
        if self.past is not None:
            parts.append(self.past((past - past[:, origin:origin + 1]).transpose(1, 2)))  # [B, P, H]
        if self.future is not None:
            if future is None:
                raise ValueError("this model reads future covariates: pass future [B, L+H, F]")
            parts.append(self.future((future - future[:, origin:origin + 1]).transpose(1, 2)))  # [B, F, H]
        return torch.einsum("bch,ct->bht", torch.cat(parts, dim=1), self.mix)  # [B, H, N_t]


class FutureTokens(nn.Module):
    """``future [B, L+H, F] -> [B, F, D]``: one token per future covariate, from its lookback and horizon."""

    def __init__(self, seq_len: int, horizon: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Linear(seq_len + horizon, d_model)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def of(cls, ctx, d_model: int, dropout: float = 0.0) -> FutureTokens | None:  # noqa: ANN001
        return cls(ctx.seq_len, ctx.horizon, d_model, dropout) if ctx.n_future else None

    def forward(self, future: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.value(future.transpose(1, 2)))


def append_future(tokens: torch.Tensor, embed: FutureTokens | None, future: torch.Tensor | None) -> torch.Tensor:
    """``tokens [B, T, D]`` followed by the future covariates' tokens, when the model has them."""
    if embed is None:
        return tokens
    if future is None:
        raise ValueError("this model reads future covariates: pass future [B, L+H, F]")
    return torch.cat([tokens, embed(future)], dim=1)
