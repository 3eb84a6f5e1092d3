"""OrthoTrans (OLinear, Yue et al. 2025, arXiv 2505.08550): forecast in a data-derived orthogonal time basis.

The module that applies the bases. They are computed from the train split by :mod:`forecast.data.orthobasis` and
reach a model as ``ModelContext.extras``; a model that can use them registers ``extras=orthotrans_needs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

EXTRAS = ("q_in", "q_out")


def orthotrans_needs(cfg: Any) -> tuple[str, ...]:
    """The registry's ``extras`` for models with an ``orthotrans`` switch: both bases when it is on."""
    return EXTRAS if getattr(cfg, "orthotrans", False) else ()


def _check_q(q: torch.Tensor | np.ndarray, size: int, name: str, side: str, other: int) -> torch.Tensor:
    q = torch.as_tensor(q).detach().to(torch.float32)
    if tuple(q.shape) != (size, size):
        hint = ""
        if tuple(q.shape) == (other, other):
            hint = " It has the other side's shape: q_in and q_out look swapped."
        raise ValueError(
            f"OrthoTrans {name} must be [{size}, {size}] (T = {side}), got {list(q.shape)}.{hint}"
        )
    if q.is_meta:  # a skeleton that allocates nothing (the artifact's shape check): no values to check
        return q.contiguous()
    eye = torch.eye(size, dtype=torch.float64)
    err = (q.double() @ q.double().T - eye).abs().max().item()
    if not err <= _tolerance(q):  # also catches NaN
        raise ValueError(f"OrthoTrans {name} is not orthogonal: max |Q Q^T - I| = {err:.3g}")
    return q.contiguous()


def _tolerance(q: torch.Tensor) -> float:
    """How far ``Q Q^T`` may be from the identity: 1e-3, or twice the machine epsilon of a half-width float type
    that holds every entry of ``q`` exactly. An orthogonal Q rounded entry by entry (relative error <= u, rows of
    unit norm) has ``|Q Q^T - I| <= 2u + u^2 <= eps``; a basis trained at bf16-true holds bfloat16 values (eps
    2^-7) whatever dtype it is stored or loaded in, a fine-tuned child's included. Another run's basis or garbage
    is off by far more."""
    rounded = [torch.finfo(t).eps for t in (torch.bfloat16, torch.float16) if torch.equal(q.to(t).to(q.dtype), q)]
    return max([1e-3, *(2 * eps for eps in rounded)])


class OrthoTrans(nn.Module):
    """Fixed orthogonal change of time basis: ``x [..., L] -> x @ q_in.T``, ``z [..., H] -> z @ q_out``.

    ``q_in [L, L]`` and ``q_out [H, H]`` are persistent buffers: they are saved in the state dict, so a
    saved model predicts without the data that produced them. Not trainable.
    """

    q_in: torch.Tensor
    q_out: torch.Tensor

    def __init__(
        self, q_in: torch.Tensor | np.ndarray, q_out: torch.Tensor | np.ndarray, seq_len: int, horizon: int
    ) -> None:
        super().__init__()
        self.seq_len, self.horizon = seq_len, horizon
        self.register_buffer("q_in", _check_q(q_in, seq_len, "q_in", f"seq_len L={seq_len}", horizon))
        self.register_buffer("q_out", _check_q(q_out, horizon, "q_out", f"horizon H={horizon}", seq_len))

    @classmethod
    def from_extras(
        cls, extras: Mapping[str, torch.Tensor], seq_len: int, horizon: int, model: str
    ) -> OrthoTrans:
        """Build from ``ModelContext.extras``; a clear ValueError when the pipeline did not provide Q."""
        missing = [k for k in ("q_in", "q_out") if k not in extras]
        if missing:
            raise ValueError(
                f"{model} with orthotrans=True needs ctx.extras['q_in'] [L, L] and ctx.extras['q_out'] [H, H] "
                f"computed from the train split (forecast.data.orthobasis.orthotrans_extras); "
                f"missing: {', '.join(missing)}"
            )
        return cls(extras["q_in"], extras["q_out"], seq_len, horizon)

    def forward_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Time -> basis coefficients: ``x [..., L] -> [..., L]``, coefficient k = <x, q_k>."""
        if x.shape[-1] != self.seq_len:
            raise ValueError(f"OrthoTrans.forward_transform expects [..., L={self.seq_len}], got {list(x.shape)}")
        return x @ self.q_in.T

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """Basis coefficients -> time: ``z [..., H] -> [..., H]``, ``y[t] = sum_k z[k] q_out[k, t]``."""
        if z.shape[-1] != self.horizon:
            raise ValueError(f"OrthoTrans.inverse_transform expects [..., H={self.horizon}], got {list(z.shape)}")
        return z @ self.q_out

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}, horizon={self.horizon}"
