"""Baselines every forecaster should beat: ``naive`` (the last value, repeated) and ``seasonal_naive`` (the last
season, repeated). Nothing is learned: they have no parameters, so training them is one pass of validation and test.

``seasonal_naive``'s season ``m`` is ``model.season`` when given, else the data's (one day of steps for
sub-daily data, 7 for daily, 52 for weekly: :func:`forecast.data.series.season_of`), which the data layer passes as
``ctx.extras["season"]`` and the model keeps as a buffer, so a saved model forecasts with the season it was tested
with. Contract: ``forward(x [B, L, N], x_mark, y_mark, future) -> [B, H, N_t]``; step ``t`` of the forecast is
``x[L - m + (t mod m)]``. Covariates are ignored: a baseline repeats each target's own history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecast.errors import ForecastError
from forecast.models.registry import ModelContext, register


BASELINES = ("naive", "seasonal_naive")  # what `forecast benchmark --baselines` adds and the dashboard draws as lines


@dataclass(frozen=True)
class NaiveConfig:
    pass


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    season: int = 0  # steps per season; 0: the data's (a day of steps, 7 for daily data, 52 for weekly)

    def __post_init__(self) -> None:
        if isinstance(self.season, bool) or not isinstance(self.season, int) or self.season < 0:
            raise ForecastError(f"model.season must be a whole number of steps (0: from the data), got {self.season!r}.")


@register("naive", NaiveConfig, "Baseline: the last value, repeated (no parameters)")
class Naive(nn.Module):
    def __init__(self, cfg: NaiveConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.horizon, self.n_targets = ctx.horizon, ctx.n_targets

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        return x[:, -1:, : self.n_targets].expand(-1, self.horizon, -1)


def _season_needs(cfg: SeasonalNaiveConfig) -> tuple[str, ...]:
    return () if cfg.season else ("season",)


@register("seasonal_naive", SeasonalNaiveConfig, "Baseline: the last season, repeated (no parameters)",
          extras=_season_needs)
class SeasonalNaive(nn.Module):
    def __init__(self, cfg: SeasonalNaiveConfig, ctx: ModelContext) -> None:
        super().__init__()
        if cfg.season > ctx.seq_len:
            raise ForecastError(f"seasonal_naive reads one season of the lookback: model.season {cfg.season} is "
                                f"longer than seq_len {ctx.seq_len}; use --seq-len {cfg.season} or more.")
        season = torch.tensor(cfg.season) if cfg.season else ctx.extras["season"]
        self.register_buffer("season", season.to(torch.long).reshape(()))
        self.seq_len, self.horizon, self.n_targets = ctx.seq_len, ctx.horizon, ctx.n_targets

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        steps = torch.arange(self.horizon, device=x.device)
        return x[:, self.seq_len - self.season + steps % self.season, : self.n_targets]
