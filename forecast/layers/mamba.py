"""The Mamba block (Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023).

Written from the block's math (model_specs.md §3). Parameter names match mamba_ssm's ``Mamba`` and
mambapy's ``MambaBlock`` (``in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj``), so a state_dict copies
across either way. Input and output are ``[B, T, D]``; T is the sequence axis the scan runs along.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from forecast.layers.selective_scan import selective_scan


class MambaBlock(nn.Module):
    """Mamba mixer: ``[x | z] = in_proj(h)``, causal depthwise conv + SiLU on x, selective scan with
    input-dependent (Δ, B, C), gate ``y ⊙ SiLU(z)``, ``out_proj``. ``h [B, T, D] -> [B, T, D]``.

    ``scan_impl`` is passed to :func:`forecast.layers.selective_scan.selective_scan` (``auto`` uses the
    mamba_ssm CUDA kernel when it imports and the input is on CUDA, else the pure-PyTorch chunked scan).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int = 2,
        expand: int = 1,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        scan_impl: str = "auto",
    ) -> None:
        super().__init__()
        d_inner = expand * d_model  # Di
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)  # R
        self.scan_impl = scan_impl

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)  # D -> [x | z]
        # Depthwise, padded d_conv-1 on both sides; keeping the first T outputs makes it causal.
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)  # Di -> [δ | B | C]
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)  # R -> Di
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

        # Reference init: dt_proj.weight ~ U(±R^-1/2); softplus(dt_proj.bias) = dt ~ logU(dt_min, dt_max) >= floor.
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        # S4D-real init: A = -(1..Ns) in every row, kept as log; skip D = 1. Both fp32, no weight decay.
        a_init = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # [Di, Ns]
        self.A_log = nn.Parameter(torch.log(a_init))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[1]
        x, z = self.in_proj(h).chunk(2, dim=-1)  # [B, T, Di] each
        x = self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)  # causal depthwise conv  [B, T, Di]
        x = F.silu(x)
        dt, Bm, Cm = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)  # [B,T,R],[B,T,Ns]x2
        delta = F.softplus(self.dt_proj(dt))  # [B, T, Di]
        A = -torch.exp(self.A_log.float())  # [Di, Ns]
        y = selective_scan(x, delta, A, Bm, Cm, self.D.float(), impl=self.scan_impl)  # [B, T, Di]
        return self.out_proj(y * F.silu(z))  # [B, T, D]

    def extra_repr(self) -> str:
        return f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, scan_impl={self.scan_impl!r}"
