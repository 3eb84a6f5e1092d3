"""Post-LN encoder blocks shared by the inverted forecasters (iTransformer, S-Mamba, OLinear)."""

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
