"""NormLin (OLinear, Yue et al. 2025, arXiv 2505.08550): a learned, row-normalized linear mixer of variate tokens.

It replaces self-attention in OLinear's encoder (model_specs.md §4.3). Used as the mixer of
:class:`forecast.layers.encoder.MixerEncoderLayer` it gives
``U = LN1(U + Dropout(out_proj(A @ v_proj(U))))`` then ``U = LN2(U + FFN(U))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormLin(nn.Module):
    """``U [B, N, D] -> out_proj(Dropout(A) @ v_proj(U)) [B, N, D]``, ``A = RowL1Normalize(Softplus(W))``.

    ``W [N, N]`` starts at ``I + N(0, 1)``. Every row of ``A`` is non-negative and sums to 1 (softplus,
    then L1 normalization; not softmax). Because ``W`` is N x N, the number of variates is fixed.
    """

    def __init__(self, n_vars: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_vars = n_vars
        self.weight = nn.Parameter(torch.eye(n_vars) + torch.randn(n_vars, n_vars))  # W [N, N]
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)  # on the mixing matrix itself

    def mixing_matrix(self) -> torch.Tensor:
        """``A [N, N]``: rows >= 0 that sum to 1 (before dropout)."""
        return F.normalize(F.softplus(self.weight), p=1, dim=-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        # u: [B, N, D]
        if u.shape[-2] != self.n_vars:
            raise ValueError(
                f"NormLin was built for N={self.n_vars} variates, got tokens {list(u.shape)}; "
                "its N x N weight cannot change N between training and test"
            )
        a = self.dropout(self.mixing_matrix())  # [N, N]
        return self.out_proj(a @ self.v_proj(u))  # [N, N] @ [B, N, D] -> [B, N, D]
