"""Post-LN encoder blocks shared by the inverted forecasters (iTransformer, S-Mamba, OLinear),
and the post-LN decoder of the vanilla Flowformer forecaster."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """``Dropout(W2(Dropout(act(W1 h))))`` with ``W1: D -> F``, ``W2: F -> D`` (the papers' 1x1 convs)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1, activation: str = "gelu") -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff)
        self.w2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.act = F.gelu if activation == "gelu" else F.relu

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(self.dropout(self.act(self.w1(h)))))


class MixerEncoderLayer(nn.Module):
    """One post-LN layer around a token mixer (attention, Flow-Attention, bi-Mamba or NormLin).

    ``h = LN1(h + Dropout(mixer(h)))`` then ``h = LN2(h + FFN(h))``, on ``h [B, T, D]``.
    ``mixer_dropout=False`` skips the first dropout (S-Mamba adds the Mamba output as is).
    """

    def __init__(
        self,
        mixer: nn.Module,
        d_model: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "gelu",
        mixer_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.mixer = mixer
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout if mixer_dropout else 0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm1(h + self.dropout(self.mixer(h)))
        return self.norm2(h + self.ffn(h))


class Encoder(nn.Module):
    """A stack of layers followed by a final ``LayerNorm(D)``."""

    def __init__(self, layers: list[nn.Module], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class DecoderLayer(nn.Module):
    """One post-LN Transformer decoder layer (the vanilla Flowformer forecaster's decoder).

    On ``h [B, T, D]`` and encoder output ``memory [B, S, D]``:
    ``h = LN1(h + Dropout(self_attn(h)))``, ``h = LN2(h + Dropout(cross_attn(h, memory)))``,
    ``h = LN3(h + FFN(h))``. Causality is the self-attention module's business (a causal inner attention).
    ``keep``: compute the last ``keep`` positions alone (their queries against every position's keys), ``[B, keep,
    D]``; what else would be computed feeds no other position of this layer, so use it where nothing reads the rest.
    """

    def __init__(
        self,
        self_attn: nn.Module,
        cross_attn: nn.Module,
        d_model: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, memory: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        q = h if keep is None else _last_rows(h, keep)
        h = self.norm1(q + self.dropout(self.self_attn(q, h)))
        h = self.norm2(h + self.dropout(self.cross_attn(h, memory)))
        return self.norm3(h + self.ffn(h))


class Decoder(nn.Module):
    """A stack of decoder layers, then a final ``LayerNorm(D)``: ``(h [B, T, D], memory [B, S, D]) -> [B, T, D]``, or
    ``[B, keep, D]``, the last ``keep`` positions, when the last layer computes those alone."""

    def __init__(self, layers: list[nn.Module], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, h: torch.Tensor, memory: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h, memory, keep if i == len(self.layers) - 1 else None)
        return self.norm(h)


def _last_rows(h: torch.Tensor, keep: int) -> torch.Tensor:
    """``h[:, -keep:]``, contiguous when ``h`` is: nn.Linear rounds a contiguous input (addmm) and a strided one (a
    product, then the bias) differently, so the kept rows take the path all of ``h``'s rows would have taken."""
    rows = h[:, -keep:]
    return rows.contiguous() if h.is_contiguous() else rows
