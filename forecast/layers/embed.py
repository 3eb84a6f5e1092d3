"""Token embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


class InvertedEmbedding(nn.Module):
    """iTransformer's inverted embedding: each variate's whole lookback becomes one token.

    ``x [B, L, N]`` and optional ``x_mark [B, L, C]`` -> tokens ``[B, N + C, D]``. The time-feature series
    become extra tokens through the same ``Linear(L -> D)``; there is no positional encoding.
    """

    def __init__(self, seq_len: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.value = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        tokens = x.transpose(1, 2)  # [B, N, L]
        if x_mark is not None:
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)  # [B, N + C, L]
        return self.dropout(self.value(tokens))  # [B, T, D]


def sinusoidal_encoding(length: int, d_model: int) -> torch.Tensor:
    """Fixed positional encoding of "Attention Is All You Need": ``[length, D]``, sin on even, cos on odd dims."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # [length, 1]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # [ceil(D/2)]
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe


class DataEmbedding(nn.Module):
    """Temporal token embedding of the Informer/Autoformer family (used by the vanilla Flowformer forecaster).

    ``x [B, L, N]`` and optional ``x_mark [B, L, C]`` -> tokens ``[B, L, D]``: one token per time step,
    ``Conv1d(N -> D, kernel 3, circular padding, no bias)`` along time, plus a fixed sinusoidal positional
    encoding, plus ``Linear(C -> D, no bias)`` of the timeF marks when the embedding was built with
    ``n_marks > 0`` and marks are given, then dropout.
    """

    max_len = 5000  # positions cached; longer inputs get their encoding computed on the fly

    def __init__(self, c_in: int, d_model: int, n_marks: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        self.value = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("pe", sinusoidal_encoding(self.max_len, d_model), persistent=False)
        self.n_marks = n_marks
        self.temporal = nn.Linear(n_marks, d_model, bias=False) if n_marks > 0 else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        L = x.shape[1]
        h = self.value(x.transpose(1, 2)).transpose(1, 2)  # [B, N, L] -> [B, D, L] -> [B, L, D]
        pe = self.pe[:L] if L <= self.max_len else sinusoidal_encoding(L, h.shape[-1]).to(h.device)
        h = h + pe.to(h.dtype)  # [L, D] broadcast over B
        if self.temporal is not None and x_mark is not None:
            if x_mark.shape[-1] != self.n_marks:
                raise ValueError(f"expected {self.n_marks} time-feature channels, got {x_mark.shape[-1]}")
            h = h + self.temporal(x_mark)  # [B, L, C] -> [B, L, D]
        return self.dropout(h)
