"""Multi-head attention: full softmax attention and the ``AttentionLayer`` that wraps an inner attention.

Full attention is the scaled dot product of "Attention Is All You Need" (Vaswani et al., 2017), as used
by iTransformer (Liu et al., ICLR 2024) and the vanilla Transformer decoder of the Flowformer forecaster.

Inner attentions share one call signature (see also ``forecast.layers.flow_attention``)::

    inner(q [B, L, h, d], k [B, S, h, d], v [B, S, h, dv], mask [L, S] | [B, h, L, S] | None) -> [B, L, h, dv]

``AttentionLayer`` owns the Q/K/V/output projections and turns ``[B, L, D]`` tokens into heads and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[L, S]`` mask, True where query i may attend key j: ``j <= i + S - L``, the queries being the last
    L of the S positions (``j <= i`` when L == S)."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)


class FullAttention(nn.Module):
    """Softmax attention ``softmax(Q K^T / sqrt(d)) V`` with dropout on the weights.

    ``causal=True`` lets query i see keys ``j <= i`` only. ``mask`` (boolean, True = may attend,
    broadcastable to ``[B, h, L, S]``) is combined with the causal mask when both are given.
    Uses ``torch.nn.functional.scaled_dot_product_attention``, which computes the same thing
    (and picks a memory-efficient kernel where the device has one).
    """

    def __init__(self, dropout: float = 0.1, causal: bool = False) -> None:
        super().__init__()
        self.dropout = dropout
        self.causal = causal

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # [B, L, h, d] -> [B, h, L, d] (and the same for keys and values)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        is_causal = self.causal
        if self.causal and (mask is not None or q.shape[-2] != k.shape[-2]):
            cm = causal_mask(q.shape[-2], k.shape[-2], q.device)
            mask = cm if mask is None else mask & cm
            is_causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # [B, h, L, dv]
        return out.transpose(1, 2)  # [B, L, h, dv]


class AttentionLayer(nn.Module):
    """Multi-head attention block: ``out(inner(Wq x, Wk y, Wv y))`` on ``[B, L, D]`` tokens.

    ``forward(queries [B, L, D], keys [B, S, D] | None, values [B, S, D] | None, mask) -> [B, L, D]``.
    Keys and values default to the queries (self-attention); pass the encoder output for
    cross-attention. All four projections are ``Linear(D -> D)`` with bias, split into ``n_heads``.
    """

    def __init__(self, inner: nn.Module, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.inner = inner
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keys = queries if keys is None else keys
        values = keys if values is None else values
        B, L, _ = queries.shape
        S = keys.shape[1]
        h = self.n_heads
        q = self.q_proj(queries).view(B, L, h, -1)  # [B, L, h, d]
        k = self.k_proj(keys).view(B, S, h, -1)  # [B, S, h, d]
        v = self.v_proj(values).view(B, S, h, -1)  # [B, S, h, d]
        out = self.inner(q, k, v, mask)  # [B, L, h, d]
        return self.out_proj(out.reshape(B, L, -1))  # [B, L, D]
