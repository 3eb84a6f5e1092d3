"""OLinear (Yue et al., NeurIPS 2025, arXiv 2505.08550), following the official code (jackyue1994/OLinear).

Each variate's lookback is lifted to d channels, moved into the OrthoTrans basis, flattened into one
token per variate, mixed across variates by NormLin encoder blocks, projected back to d x H
coefficients, moved back to time and reduced by an MLP head (model_specs.md §4.2-4.4).
Affine RevIN is applied outside, by ``create_model`` (config ``revin: affine``); time marks are ignored.

Covariates: a past covariate is one more variate token (lifted, transformed and embedded like a target); each future
covariate is one more token embedded from its lookback and horizon
(:class:`~forecast.layers.covariates.FutureTokens`). NormLin mixes all of them; the output projection and the head
read the targets' tokens alone.

Contract: ``forward(x [B, L, N], x_mark, y_mark, future) -> [B, H, N_t]``. Needs ``ctx.extras["q_in"] [L, L]`` and
``ctx.extras["q_out"] [H, H]`` (train split only) unless ``orthotrans=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecast.layers.covariates import FutureTokens, append_future
from forecast.layers.encoder import Encoder, MixerEncoderLayer
from forecast.layers.normlin import NormLin
from forecast.layers.orthotrans import OrthoTrans, orthotrans_needs
from forecast.layers.revin import REVIN_MODES
from forecast.models.registry import ModelContext, register

MIXERS = ("normlin", "attention")


@dataclass(frozen=True)
class OLinearConfig:
    d_model: int = 512  # D, token width
    d_ff: int = 512  # F, encoder FFN width and the head's hidden width
    e_layers: int = 2  # E, NormLin encoder blocks
    embed_size: int = 16  # d, channels each scalar is lifted to
    dropout: float = 0.2  # encoder, NormLin mixing matrix and the output
    revin: str = "affine"  # none | plain | affine (the official model uses affine)
    orthotrans: bool = True  # False: ablation, identity instead of the Q basis
    mixer: str = "normlin"  # normlin | attention (ablation: softmax multi-head attention over variates)
    n_heads: int = 8  # mixer=attention only

    def __post_init__(self) -> None:
        if self.revin not in REVIN_MODES:
            raise ValueError(f"revin must be one of {', '.join(REVIN_MODES)}, got {self.revin!r}")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}")
        if self.mixer == "attention" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if min(self.d_model, self.d_ff, self.e_layers, self.embed_size) < 1:
            raise ValueError("d_model, d_ff, e_layers and embed_size must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class SelfAttentionMixer(nn.Module):
    """Plain multi-head softmax self-attention over the variate tokens: ``h [B, N, D] -> [B, N, D]``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.attn(h, h, h, need_weights=False)[0]


@register("olinear", OLinearConfig, "OLinear: OrthoTrans basis + NormLin variate mixing (Yue et al., 2025)",
          extras=orthotrans_needs)
class OLinear(nn.Module):
    def __init__(self, cfg: OLinearConfig, ctx: ModelContext) -> None:
        super().__init__()
        L, H, N, d, D = ctx.seq_len, ctx.horizon, ctx.n_vars, cfg.embed_size, cfg.d_model
        self.horizon, self.embed_size, self.n_targets = H, d, ctx.n_targets
        self.ortho = OrthoTrans.from_extras(ctx.extras, L, H, "olinear") if cfg.orthotrans else None
        self.phi = nn.Parameter(torch.randn(1, d))  # dimension extension, [1, d]
        self.delta_in = nn.Parameter(torch.zeros(1, N, 1, L))  # bias after OrthoTrans, [1, N, 1, L]
        self.delta_out = nn.Parameter(torch.zeros(1, ctx.n_targets, 1, H))  # after inverse OrthoTrans, [1, N_t, 1, H]
        self.embed = nn.Linear(d * L, D)
        self.future_embed = FutureTokens.of(ctx, D)
        layers = [
            MixerEncoderLayer(self._mixer(cfg, N + ctx.n_future), D, cfg.d_ff, cfg.dropout, activation="gelu")
            for _ in range(cfg.e_layers)
        ]
        self.encoder = Encoder(layers, D)
        self.project = nn.Linear(D, d * H)
        self.head = nn.Sequential(nn.Linear(H * d, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, H))
        self.out_dropout = nn.Dropout(cfg.dropout)  # on the prediction itself, training only

    @staticmethod
    def _mixer(cfg: OLinearConfig, n_vars: int) -> nn.Module:
        if cfg.mixer == "attention":
            return SelfAttentionMixer(cfg.d_model, cfg.n_heads, cfg.dropout)
        return NormLin(n_vars, cfg.d_model, cfg.dropout)

    def forward(self, x: torch.Tensor, x_mark=None, y_mark=None, future=None) -> torch.Tensor:
        B, n_t = x.shape[0], self.n_targets
        h = x.transpose(1, 2).unsqueeze(-1) * self.phi  # [B, N, L, 1] * [1, d] -> [B, N, L, d]
        h = h.transpose(-1, -2)  # [B, N, d, L]
        if self.ortho is not None:
            h = self.ortho.forward_transform(h)  # [B, N, d, L], coefficients in the Q_i basis
        h = h + self.delta_in
        h = self.embed(h.flatten(2))  # [B, N, d*L] (L fastest) -> [B, N, D]
        h = self.encoder(append_future(h, self.future_embed, future))[:, :n_t]  # [B, N (+F), D] -> [B, N_t, D]
        h = self.project(h).reshape(B, n_t, self.embed_size, self.horizon)  # [B, N_t, d, H]
        if self.ortho is not None:
            h = self.ortho.inverse_transform(h)  # [B, N_t, d, H], back to time
        h = h + self.delta_out
        h = h.transpose(-1, -2).flatten(2)  # [B, N_t, H, d] -> [B, N_t, H*d]
        y = self.out_dropout(self.head(h))  # [B, N_t, H]
        return y.transpose(1, 2)  # [B, H, N_t]
