"""The vanilla Flowformer forecaster (Wu et al., "Flowformer", ICML 2022; the forecasting baseline of the
iTransformer paper's "boost" experiment, thuml/iTransformer model/Flowformer.py).

A Transformer encoder-decoder over temporal tokens (one token per time step):

- encoder: ``DataEmbedding`` of ``x [B, L, N]`` (+ marks), E post-LN layers with non-causal Flow-Attention,
  final LayerNorm -> ``[B, L, D]``;
- decoder: ``DataEmbedding`` of the last ``label_len`` rows of x followed by H zeros (marks: the last
  ``label_len`` rows of ``x_mark`` followed by ``y_mark``), d_layers post-LN layers of causal softmax
  self-attention, softmax cross-attention to the encoder output and an FFN, final LayerNorm, ``Linear(D -> N)``;
- output: the last H decoder steps, ``[B, H, N]``.

Covariates: past covariates are more input channels of both embeddings (the decoder's are zero over the horizon,
as the targets' are); future covariates join the time marks, so the encoder reads them over the lookback and the
decoder over its warm-up rows and the horizon; ``Linear(D -> N_t)`` forecasts the targets.

Contract: ``forward(x [B, L, N], x_mark [B, L, C] | None, y_mark [B, H, C] | None, future [B, L+H, F] | None)
-> [B, H, N_t]``.
The time-feature embedding is skipped when marks are None. No instance normalization by default
(``revin: none``), as in the paper's baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecast.layers.attention import AttentionLayer, FullAttention
from forecast.layers.embed import DataEmbedding
from forecast.layers.encoder import Decoder, DecoderLayer, Encoder, MixerEncoderLayer
from forecast.layers.flow_attention import FlowAttention
from forecast.models.registry import ModelContext, register


@dataclass(frozen=True)
class FlowformerConfig:
    d_model: int = 512  # D
    d_ff: int = 2048  # F
    n_heads: int = 8
    e_layers: int = 2  # encoder layers (Flow-Attention)
    d_layers: int = 1  # decoder layers (softmax attention)
    dropout: float = 0.1
    activation: str = "gelu"  # gelu | relu
    label_len: int = 48  # decoder warm-up rows taken from the end of x; clipped to seq_len
    revin: str = "none"  # none | plain | affine; the paper's baseline has none

    def __post_init__(self) -> None:
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be gelu or relu, got {self.activation!r}")
        if min(self.d_model, self.d_ff, self.n_heads, self.e_layers, self.d_layers) < 1:
            raise ValueError("d_model, d_ff, n_heads, e_layers and d_layers must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.label_len < 0:
            raise ValueError(f"label_len must be >= 0, got {self.label_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@register("flowformer", FlowformerConfig, "Flowformer: temporal-token encoder-decoder, Flow-Attention encoder")
class Flowformer(nn.Module):
    """Vanilla Flowformer: ``x [B, L, N]`` -> encoder ``[B, L, D]``; decoder ``[B, label + H, D]`` -> ``[B, H, N]``."""

    def __init__(self, cfg: FlowformerConfig, ctx: ModelContext) -> None:
        super().__init__()
        D, N = cfg.d_model, ctx.n_vars
        self.horizon = ctx.horizon
        # label_len may not exceed the lookback; a longer one is clipped (the default 48 vs a short L).
        self.label_len = min(cfg.label_len, ctx.seq_len)
        self.enc_embed = DataEmbedding(N, D, ctx.n_marks + ctx.n_future, cfg.dropout)
        self.dec_embed = DataEmbedding(N, D, ctx.n_marks + ctx.n_future, cfg.dropout)
        self.encoder = Encoder(
            [
                MixerEncoderLayer(
                    AttentionLayer(FlowAttention(), D, cfg.n_heads), D, cfg.d_ff, cfg.dropout, cfg.activation
                )
                for _ in range(cfg.e_layers)
            ],
            D,
        )
        self.decoder = Decoder(
            [
                DecoderLayer(
                    AttentionLayer(FullAttention(cfg.dropout, causal=True), D, cfg.n_heads),
                    AttentionLayer(FullAttention(cfg.dropout), D, cfg.n_heads),
                    D,
                    cfg.d_ff,
                    cfg.dropout,
                    cfg.activation,
                )
                for _ in range(cfg.d_layers)
            ],
            D,
        )
        self.projection = nn.Linear(D, ctx.n_targets)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None, y_mark: torch.Tensor | None = None,
                future: torch.Tensor | None = None) -> torch.Tensor:
        B, L, N = x.shape
        if future is not None:  # known over the horizon: the decoder reads them with the calendar
            x_mark = future[:, :L] if x_mark is None else torch.cat([x_mark, future[:, :L]], dim=-1)
            y_mark = future[:, L:] if y_mark is None else torch.cat([y_mark, future[:, L:]], dim=-1)
        H, label = self.horizon, min(self.label_len, L)
        x_dec = torch.cat([x[:, L - label :], x.new_zeros(B, H, N)], dim=1)  # [B, label + H, N]
        mark_dec = None
        if x_mark is not None and y_mark is not None:
            if y_mark.shape[1] != H:
                raise ValueError(f"y_mark must cover the horizon: expected {H} steps, got {y_mark.shape[1]}")
            mark_dec = torch.cat([x_mark[:, L - label :], y_mark], dim=1)  # [B, label + H, C]
        memory = self.encoder(self.enc_embed(x, x_mark))  # [B, L, D]
        dec = self.dec_embed(x_dec, mark_dec)  # [B, label + H, D]
        if self.training:  # every decoder position (dropout draws a mask for each)
            return self.projection(self.decoder(dec, memory)[:, -H:])  # [B, H, N_t]
        # Evaluation: the last decoder layer computes the H horizon positions alone, the only outputs read (its FFN
        # and cross-attention work per position; its self-attention still reads the warm-up rows as keys). They
        # are put back in a [B, label + H, D] tensor so that the projection reads them through the same strides
        # as training's slice: nn.Linear rounds a strided view and a contiguous tensor differently (the bias
        # added after the product or within it), and this way every forecast is the same bits as before.
        h = dec.new_zeros(dec.shape)
        h[:, label:] = self.decoder(dec, memory, keep=H)
        return self.projection(h[:, -H:])  # [B, H, N_t]
