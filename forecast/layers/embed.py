"""Token embeddings."""

from __future__ import annotations

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
