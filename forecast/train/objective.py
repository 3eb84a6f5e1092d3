"""What a run optimizes: the loss, Adam's parameter groups and the per-epoch lr schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from forecast.config import TrainConfig
from forecast.layers.covariates import CovariateMap
from forecast.layers.quantile import pinball


def make_loss(name: str, alpha: float = 0.5, quantiles: tuple[float, ...] = ()):
    """``(pred, target) -> scalar``: mse, mae, weighted_l1 = mean(|err| * (t+1)^-alpha) (not renormalized), or
    quantile: the mean pinball loss of ``pred [B, H, N, Q]`` at ``quantiles``."""
    if name == "quantile":
        levels = torch.tensor(quantiles, dtype=torch.float32)
        return lambda p, y: pinball(p, y, levels.to(p.device))
    if name == "mse":
        return lambda p, y: (p - y).pow(2).mean()
    if name == "mae":
        return lambda p, y: (p - y).abs().mean()

    def weighted_l1(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = torch.arange(p.shape[1], device=p.device, dtype=p.dtype)
        w = (t + 1.0).pow(-alpha).view(1, -1, 1)  # [1, H, 1]
        return ((p - y).abs() * w).mean()

    return weighted_l1


def param_groups(net: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam's groups: every parameter at ``cfg.lr``, but a covariate map's at ``cfg.covariate_lr`` (one group, in
    ``net.parameters()`` order, when there is none: the papers' runs are unchanged)."""
    covariate = {id(p) for m in net.modules() if isinstance(m, CovariateMap) for p in m.parameters()}
    groups = [{"params": [p for p in net.parameters() if id(p) not in covariate]}]
    if covariate:
        groups.append({"params": [p for p in net.parameters() if id(p) in covariate], "lr": cfg.covariate_lr})
    return groups


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base lr during 0-based ``epoch`` (TSLib's adjust_learning_rate, applied per epoch)."""
    if cfg.lradj == "type1":  # lr0, lr0, lr0/2, lr0/4, ...
        return 0.5 ** max(epoch - 1, 0)
    if cfg.lradj == "cosine":
        return 1.0 if epoch == 0 else 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lradj == "hold_decay":  # OLinear: hold for lr_hold_epochs, then *lr_decay per epoch
        return 1.0 if epoch < cfg.lr_hold_epochs else cfg.lr_decay ** (epoch - cfg.lr_hold_epochs + 1)
    return 1.0
