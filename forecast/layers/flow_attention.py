"""Flow-Attention (Wu et al., "Flowformer: Linearizing Transformers with Conservation Flows", ICML 2022).

Attention as a flow network: the S values are sources, the L outputs are sinks, and the capacity from
source j to sink i is ``phi(q_i) . phi(k_j)`` with ``phi = sigmoid``. Per head, with eps = 1e-6 added to
both factors of every dot product:

- flows: ``I_i = phi(q_i) . sum_j phi(k_j)`` (sink incoming), ``O_j = phi(k_j) . sum_i phi(q_i)`` (source outgoing)
- conservation: ``Î_i = phi(q_i) . sum_j phi(k_j) / O_j``, ``Ô_j = phi(k_j) . sum_i phi(q_i) / I_i``
- competition: ``V̂_j = V_j * S * softmax_j(Ô)``; allocation: ``a_i = sigmoid(Î_i * L / S)``
- output: ``R_i = a_i * (phi(q_i) / I_i) (phi(K)^T V̂)``

``phi(K)^T V̂`` (a d x dv matrix per head) is computed first, so time and memory are linear in L and S;
no L x S matrix is ever formed. :class:`FlowAttention` is the forecasting ("iTransformer / TimeSeries")
flavour: no clamp of ``Ô``, no dropout, projections owned by the surrounding ``AttentionLayer``.
:class:`CausalFlowAttention` is the causal version of the core file (prefix sums, clamp of ``Ô``).

Both share the inner-attention signature of ``forecast.layers.attention``::

    forward(q [B, L, h, d], k [B, S, h, d], v [B, S, h, dv], mask=None) -> [B, L, h, dv]
"""

from __future__ import annotations

import torch
from torch import nn


class FlowAttention(nn.Module):
    """Non-causal Flow-Attention, forecasting flavour (iFlowformer, the Flowformer forecaster's encoder).

    ``clamp`` (off by default, as in the forecasting code) limits ``Ô`` to ``[-clamp, clamp]`` before
    the competition softmax, as the core Flowformer code does with 1.0.
    """

    def __init__(self, eps: float = 1e-6, clamp: float | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.clamp = clamp

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None:
            raise ValueError("FlowAttention takes no mask; use CausalFlowAttention for causal attention")
        eps = self.eps
        q = torch.sigmoid(q.transpose(1, 2))  # phi(Q) [B, h, L, d]
        k = torch.sigmoid(k.transpose(1, 2))  # phi(K) [B, h, S, d]
        v = v.transpose(1, 2)  # [B, h, S, dv]
        L, S = q.shape[2], k.shape[2]
        # (1) incoming flow of each sink and outgoing flow of each source, stored as reciprocals
        inv_in = 1.0 / torch.einsum("bhld,bhd->bhl", q + eps, k.sum(dim=2) + eps)  # 1/I [B, h, L]
        inv_out = 1.0 / torch.einsum("bhsd,bhd->bhs", k + eps, q.sum(dim=2) + eps)  # 1/O [B, h, S]
        # (2) conserved flows: sources emit 1 each (-> Î), sinks receive 1 each (-> Ô)
        sink = torch.einsum("bhld,bhd->bhl", q + eps, (k * inv_out[..., None]).sum(dim=2) + eps)  # Î [B, h, L]
        source = torch.einsum("bhsd,bhd->bhs", k + eps, (q * inv_in[..., None]).sum(dim=2) + eps)  # Ô [B, h, S]
        if self.clamp is not None:
            source = source.clamp(-self.clamp, self.clamp)
        # (3) competition over sources, allocation per sink
        competition = torch.softmax(source, dim=-1) * S  # [B, h, S]
        allocation = torch.sigmoid(sink * (L / S))  # [B, h, L]
        # (4) linear-cost aggregation: phi(K)^T V̂ first
        kv = torch.einsum("bhsd,bhse->bhde", k, v * competition[..., None])  # [B, h, d, dv]
        out = torch.einsum("bhld,bhde->bhle", q * inv_in[..., None], kv) * allocation[..., None]  # [B, h, L, dv]
        return out.transpose(1, 2)  # [B, L, h, dv]


class CausalFlowAttention(nn.Module):
    """Causal Flow-Attention (core Flowformer code): sink i sees sources ``j <= i``; needs ``L == S``.

    With ``c_i = i + 1`` visible positions, flows become prefix sums normalized by c:
    ``Î_i = phi(q_i) . sum_{j<=i} phi(k_j) c_j / O_j / c_i``, ``Ô_j = phi(k_j) . sum_{i<=j} phi(q_i) c_i / I_i / c_j``
    (``Ô`` clamped to ``[-1, 1]``), allocation ``sigmoid(Î_i)``, competition a causal softmax times c_j,
    and ``R_i = a_i (phi(q_i) / I_i) sum_{j<=i} phi(k_j)^T V̂_j``. Memory is ``[B, h, L, d, dv]``, linear in L.
    """

    def __init__(self, eps: float = 1e-6, clamp: float | None = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.clamp = clamp

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None:
            raise ValueError("CausalFlowAttention takes no mask; causality is built in")
        if q.shape[1] != k.shape[1]:
            raise ValueError(f"causal Flow-Attention needs as many queries as keys, got {q.shape[1]} and {k.shape[1]}")
        eps = self.eps
        q = torch.sigmoid(q.transpose(1, 2))  # phi(Q) [B, h, L, d]
        k = torch.sigmoid(k.transpose(1, 2))  # phi(K) [B, h, L, d]
        v = v.transpose(1, 2)  # [B, h, L, dv]
        c = torch.arange(1, q.shape[2] + 1, device=q.device, dtype=q.dtype)  # visible positions [L]
        # (1) prefix flows; reciprocals scaled by c (mean instead of sum over the visible positions)
        inv_in = c / torch.einsum("bhld,bhld->bhl", q + eps, k.cumsum(dim=2) + eps)  # c/I [B, h, L]
        inv_out = c / torch.einsum("bhld,bhld->bhl", k + eps, q.cumsum(dim=2) + eps)  # c/O [B, h, L]
        # (2) conserved flows over prefixes
        sink = torch.einsum("bhld,bhld->bhl", q + eps, (k * inv_out[..., None]).cumsum(dim=2) + eps) / c  # Î
        source = torch.einsum("bhld,bhld->bhl", k + eps, (q * inv_in[..., None]).cumsum(dim=2) + eps) / c  # Ô
        if self.clamp is not None:
            source = source.clamp(-self.clamp, self.clamp)
        # (3) causal competition exp(Ô_j) / sum_{j'<=j} exp(Ô_j') * c_j, computed stably in log space
        competition = torch.exp(source - torch.logcumsumexp(source, dim=-1)) * c  # [B, h, L]
        allocation = torch.sigmoid(sink)  # [B, h, L]
        # (4) causal aggregation: prefix sums of phi(k_j)^T V̂_j
        kv = torch.einsum("bhld,bhle->bhlde", k, v * competition[..., None]).cumsum(dim=2)  # [B, h, L, d, dv]
        out = torch.einsum("bhld,bhlde->bhle", q * (inv_in / c)[..., None], kv) * allocation[..., None]
        return out.transpose(1, 2)  # [B, L, h, dv]
