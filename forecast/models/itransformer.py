"""iTransformer (Liu et al., "iTransformer: Inverted Transformers Are Effective for Time Series Forecasting",
ICLR 2024) and its inverted variants, which differ only in the token mixer (iFlowformer: Flow-Attention).

Each variate's whole lookback is one token (and, when marks are given, each time-feature series is one more
token); a post-LN Transformer encoder mixes the tokens; ``Linear(D -> H)`` reads each token out and the
first N tokens are the forecast. Contract: ``forward(x [B, L, N], x_mark [B, L, C] | None, y_mark, future) ->
[B, H, N_t]``.

Covariates (in the spirit of TimeXer): a past covariate is one more variate token, read from its lookback like a
target (the MS setting of the official code); each future covariate is one more token embedded from its series over
lookback *and* horizon (:class:`~forecast.layers.covariates.FutureTokens`). All tokens are mixed; only the targets'
tokens are read out.
RevIN (non-affine, the paper's ``use_norm``) is applied by ``create_model``, not here.

Nothing in the model depends on N: embedding, mixer, FFN and projector are shared by all tokens, so a
model built for ``ctx.n_vars`` accepts any number of variates at run time (partial-variate training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from forecast.layers.attention import AttentionLayer, FullAttention
from forecast.layers.covariates import FutureTokens, append_future
from forecast.layers.embed import InvertedEmbedding
from forecast.layers.encoder import Encoder, MixerEncoderLayer
from forecast.layers.flow_attention import FlowAttention
from forecast.layers.normlin import NormLin
from forecast.layers.orthotrans import OrthoTrans, orthotrans_needs
from forecast.models.registry import ModelContext, register, register_alias

# Token mixers an inverted encoder layer can use. To add one: a name here and a branch in _make_mixer.
MIXERS = ("full", "flow", "normlin")
ACTIVATIONS = ("gelu", "relu")


@dataclass(frozen=True)
class ITransformerConfig:
    d_model: int = 512  # D, token width
    d_ff: int = 512  # F, FFN width (the official scripts always set d_ff = d_model)
    n_heads: int = 8
    e_layers: int = 2  # E, encoder layers
    dropout: float = 0.1  # embedding, attention weights, residual and FFN dropout
    activation: str = "gelu"  # gelu | relu
    attention: str = "full"  # token mixer: full (iTransformer) | flow (iFlowformer) | normlin (OLinear's mixer)
    use_marks: bool = True  # time-feature series as extra tokens when x_mark is given
    revin: str = "plain"  # none | plain | affine (plain = the paper's use_norm)
    orthotrans: bool = False  # embed each lookback in the OrthoTrans basis (OLinear's plug-in; needs q_in)

    def __post_init__(self) -> None:
        if self.attention not in MIXERS:
            raise ValueError(f"attention must be one of {', '.join(MIXERS)}, got {self.attention!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if min(self.d_model, self.d_ff, self.n_heads, self.e_layers) < 1:
            raise ValueError("d_model, d_ff, n_heads and e_layers must be positive")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _make_mixer(name: str, cfg: ITransformerConfig, n_tokens: int) -> nn.Module:
    """The token mixer of one encoder layer: ``[B, T, D] -> [B, T, D]``.

    ``n_tokens`` is T at build time (N + C); mixers that depend on it break variable-N inference.
    """
    if name == "full":
        return AttentionLayer(FullAttention(cfg.dropout), cfg.d_model, cfg.n_heads)
    if name == "flow":
        return AttentionLayer(FlowAttention(), cfg.d_model, cfg.n_heads)
    if name == "normlin":  # an N x N learned mixer: fixes the token count (no partial-variate training)
        return NormLin(n_tokens, cfg.d_model, cfg.dropout)
    raise ValueError(f"unknown token mixer {name!r}; known: {', '.join(MIXERS)}")


@register("itransformer", ITransformerConfig, "iTransformer: variates as tokens, Transformer encoder (ICLR 2024)",
          extras=orthotrans_needs)
class ITransformer(nn.Module):
    """iTransformer: ``x [B, L, N]`` (+ ``x_mark [B, L, C]``) -> tokens ``[B, N + C, D]`` -> ``[B, H, N]``."""

    def __init__(self, cfg: ITransformerConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.use_marks = cfg.use_marks
        n_tokens = ctx.n_vars + (ctx.n_marks if cfg.use_marks else 0) + ctx.n_future
        self.n_targets = ctx.n_targets if ctx.n_targets < ctx.n_vars else None  # None: every variate (any N)
        self.ortho = (OrthoTrans.from_extras(ctx.extras, ctx.seq_len, ctx.horizon, "itransformer")
                      if cfg.orthotrans else None)
        self.embed = InvertedEmbedding(ctx.seq_len, cfg.d_model, cfg.dropout)
        self.future_embed = FutureTokens.of(ctx, cfg.d_model, cfg.dropout)
        self.encoder = Encoder(
            [
                MixerEncoderLayer(
                    _make_mixer(cfg.attention, cfg, n_tokens), cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation
                )
                for _ in range(cfg.e_layers)
            ],
            cfg.d_model,
        )
        self.projector = nn.Linear(cfg.d_model, ctx.horizon)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None, y_mark: torch.Tensor | None = None,
                future: torch.Tensor | None = None) -> torch.Tensor:
        n_out = self.n_targets or x.shape[-1]
        if self.ortho is not None:  # each variate's lookback in the orthogonal basis: [B, N, L] @ Q_in^T
            x = self.ortho.forward_transform(x.transpose(1, 2)).transpose(1, 2)
        tokens = self.embed(x, x_mark if self.use_marks else None)  # [B, T, D], T = N (+ C)
        tokens = append_future(tokens, self.future_embed, future)  # (+ F)
        h = self.encoder(tokens)  # [B, T, D]
        out = self.projector(h)  # [B, T, H]
        return out.transpose(1, 2)[:, :, :n_out]  # [B, H, N_t]: the targets' tokens alone


register_alias(
    "iflowformer",
    "itransformer",
    "iFlowformer: iTransformer with Flow-Attention as the token mixer (ICLR 2024 'boost' experiment)",
    attention="flow",
)
