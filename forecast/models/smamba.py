"""S-Mamba (Wang et al., "Is Mamba Effective for Time Series Forecasting?", Neurocomputing 2025; code
wzhwzhwzh0921/S-D-Mamba).

iTransformer with the attention replaced by a bidirectional Mamba over the variate tokens: each variate's
lookback (and each time-feature series, when marks are given) is one token, the tokens ``[B, N + C, D]``
are read as a sequence in column order, ``Linear(D -> H)`` reads each token out and the first N tokens are
the forecast. Contract: ``forward(x [B, L, N], x_mark [B, L, C] | None, y_mark, future) -> [B, H, N_t]``.

Covariates, as in iTransformer: a past covariate is one more variate token (after the targets, in column order), each
future covariate one more token embedded from its lookback and horizon, placed after the mark tokens, so the
bidirectional scan reads targets, past covariates, marks, future covariates; only the targets' tokens are read out.
RevIN (non-affine, the paper's ``use_norm``) is applied by ``create_model``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecast.layers.covariates import FutureTokens, append_future
from forecast.layers.embed import InvertedEmbedding
from forecast.layers.encoder import Encoder, MixerEncoderLayer
from forecast.layers.mamba import MambaBlock
from forecast.layers.selective_scan import active_scan_backend
from forecast.models.registry import ModelContext, register

ACTIVATIONS = ("gelu", "relu")


@dataclass(frozen=True)
class SMambaConfig:
    d_model: int = 512  # D, token width
    d_ff: int = 512  # F, FFN width
    e_layers: int = 2  # E, encoder layers
    d_state: int = 32  # Ns, Mamba state size (run.py default; the ETT and Weather scripts use 2)
    d_conv: int = 2  # Mamba conv width (hard-coded 2 in the official model)
    expand: int = 1  # Mamba inner width Di = expand * D (hard-coded 1)
    dropout: float = 0.1  # embedding and FFN dropout (none on the Mamba branch)
    activation: str = "gelu"  # FFN activation: gelu | relu
    revin: str = "plain"  # none | plain | affine (plain = the paper's use_norm)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if min(self.d_model, self.d_ff, self.e_layers, self.d_state, self.d_conv, self.expand) < 1:
            raise ValueError("d_model, d_ff, e_layers, d_state, d_conv and expand must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class BiMamba(nn.Module):
    """``fwd(h) + flip(bwd(flip(h)))`` along the token axis, two independent Mamba blocks. ``[B, T, D] -> [B, T, D]``.

    Token t sees tokens <= t through ``fwd`` and tokens >= t through ``bwd``.
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int = 2, expand: int = 1) -> None:
        super().__init__()
        self.fwd = MambaBlock(d_model, d_state, d_conv=d_conv, expand=expand)
        self.bwd = MambaBlock(d_model, d_state, d_conv=d_conv, expand=expand)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fwd(h) + self.bwd(h.flip(1)).flip(1)  # [B, T, D]


@register("smamba", SMambaConfig, "S-Mamba: variates as tokens, bidirectional Mamba encoder (S-D-Mamba)")
class SMamba(nn.Module):
    """S-Mamba: ``x [B, L, N]`` (+ ``x_mark [B, L, C]``) -> tokens ``[B, N + C, D]`` -> ``[B, H, N]``."""

    def __init__(self, cfg: SMambaConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.embed = InvertedEmbedding(ctx.seq_len, cfg.d_model, cfg.dropout)
        self.future_embed = FutureTokens.of(ctx, cfg.d_model, cfg.dropout)
        self.n_targets = ctx.n_targets if ctx.n_targets < ctx.n_vars else None  # None: every variate
        self.encoder = Encoder(
            [
                MixerEncoderLayer(
                    BiMamba(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand),
                    cfg.d_model,
                    cfg.d_ff,
                    cfg.dropout,
                    cfg.activation,
                    mixer_dropout=False,  # S-Mamba adds the Mamba output without dropout
                )
                for _ in range(cfg.e_layers)
            ],
            cfg.d_model,
        )
        self.projector = nn.Linear(cfg.d_model, ctx.horizon)

    @staticmethod
    def backend_info() -> str:
        """The selective-scan path this machine uses (shown by ``forecast models``)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return f"{active_scan_backend(device)} on {device.type}"

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None, y_mark: torch.Tensor | None = None,
                future: torch.Tensor | None = None) -> torch.Tensor:
        n_out = self.n_targets or x.shape[-1]
        tokens = self.embed(x, x_mark)  # [B, T, D], T = N (+ C): variates in column order, then marks
        tokens = append_future(tokens, self.future_embed, future)  # (+ F)
        h = self.encoder(tokens)  # [B, T, D]
        out = self.projector(h)  # [B, T, H]
        return out.transpose(1, 2)[:, :, :n_out]  # [B, H, N_t], covariate and mark tokens dropped
