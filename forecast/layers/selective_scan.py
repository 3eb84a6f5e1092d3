"""Mamba's selective scan (S6; Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023).

For every channel d and state n, with s_0 = 0::

    s_t = exp(Δ_t A) ⊙ s_{t-1} + Δ_t B_t u_t        (zero-order hold for A, Euler step for B)
    y_t = Σ_n C_t[n] s_t[:, n] + D ⊙ u_t

Layout: **time-major**, like the ``[B, T, D]`` tokens around it (mamba_ssm uses ``[B, Di, T]`` / ``[B, Ns, T]``;
the CUDA path transposes)::

    u, delta  [B, T, Di]   input and step size (Δ > 0, already softplus-ed)
    A         [Di, Ns]     diagonal state matrix per channel, negative (A = -exp(A_log))
    B, C      [B, T, Ns]   input-dependent, shared by all channels
    D         [Di]         skip (optional)
    -> y      [B, T, Di]   in u's dtype, computed in fp32 (fp64 inputs stay fp64)

Implementations behind :func:`selective_scan`:

- ``mamba-ssm``: the mamba_ssm CUDA kernel (``selective_scan_fn``), used by ``impl="auto"`` when it imports
  and the tensors are on CUDA.
- ``chunked`` (:func:`selective_scan_chunked`, the default elsewhere; :mod:`forecast.layers.scan_chunked`):
  T cut into chunks, the state carried from chunk to chunk, an analytic backward.
- ``ref`` (:func:`selective_scan_ref`): the plain sequential loop through autograd; tests only.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

from forecast.layers.scan_chunked import _check_shapes, _compute_dtype, selective_scan_chunked


IMPLS = ("auto", "mamba-ssm", "chunked", "closed", "ref")
_CUDA_BACKEND = "mamba-ssm CUDA kernel"
_TORCH_BACKEND = "chunked (pure PyTorch)"


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> Tensor:
    """The plain sequential recurrence through autograd (the definition; slow, for tests). Shapes as above."""
    _check_shapes(u, delta, A, B, C, D)
    cd = _compute_dtype(u)
    u_, d_, A_, B_, C_ = (t.to(cd) for t in (u, delta, A, B, C))
    s = u_.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # [B, Di, Ns]
    ys = []
    for t in range(u.shape[1]):
        a = torch.exp(d_[:, t, :, None] * A_)  # [B, Di, Ns]
        s = a * s + (d_[:, t] * u_[:, t])[:, :, None] * B_[:, t, None, :]  # [B, Di, Ns]
        ys.append((s * C_[:, t, None, :]).sum(-1))  # [B, Di]
    y = torch.stack(ys, dim=1)  # [B, T, Di]
    if D is not None:
        y = y + u_ * D.to(cd)
    return y.to(u.dtype)


# Inside the autograd.Function everything is time-first: chunk tensors are [k, B, Di, Ns], so one token's
# slice [B, Di, Ns] is contiguous.


@functools.lru_cache(maxsize=1)
def _mamba_ssm_fn() -> Callable[..., Tensor] | None:
    """mamba_ssm's ``selective_scan_fn``, or None when mamba-ssm (or its CUDA extension) does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken compiled extension
        return None
    return selective_scan_fn


def _kernel_usable(u: Tensor) -> bool:
    return u.is_cuda and u.dtype in (torch.float32, torch.float16, torch.bfloat16) and _mamba_ssm_fn() is not None


def _selective_scan_kernel(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> Tensor:
    """The mamba_ssm kernel in its channel-major layout: u, delta [B, Di, T]; B, C [B, Ns, T] (u's dtype)."""
    fn = _mamba_ssm_fn()
    assert fn is not None

    def cm(t: Tensor) -> Tensor:  # [B, T, *] -> [B, *, T], contiguous, in u's dtype
        return t.to(u.dtype).transpose(1, 2).contiguous()

    y = fn(cm(u), cm(delta), A.float().contiguous(), cm(B), cm(C), None if D is None else D.float())
    return y.transpose(1, 2)  # [B, T, Di]


def active_scan_backend(device: torch.device | str) -> str:
    """Which implementation ``selective_scan(impl="auto")`` uses on ``device`` (for ``forecast models``)."""
    dev = torch.device(device)
    if dev.type == "cuda" and _mamba_ssm_fn() is not None:
        return _CUDA_BACKEND
    return _TORCH_BACKEND


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """Selective scan, ``u, delta [B, T, Di]``, ``A [Di, Ns]``, ``B, C [B, T, Ns]``, ``D [Di]`` -> ``[B, T, Di]``.

    ``impl``: ``auto`` (the mamba_ssm CUDA kernel for CUDA tensors when it imports, else ``chunked``, silently),
    ``mamba-ssm`` (the kernel or a RuntimeError), ``chunked``, ``closed`` (chunked with the closed form inside
    chunks) or ``ref``.
    """
    if impl == "auto":
        impl = "mamba-ssm" if _kernel_usable(u) else "chunked"
    if impl == "mamba-ssm":
        if not _kernel_usable(u):
            raise RuntimeError(
                "impl='mamba-ssm' needs CUDA tensors in fp32/fp16/bf16 and an importable mamba-ssm "
                "(pip install 'mamba-ssm>=2' on a CUDA machine)"
            )
        _check_shapes(u, delta, A, B, C, D)
        return _selective_scan_kernel(u, delta, A, B, C, D)
    if impl == "chunked":
        return selective_scan_chunked(u, delta, A, B, C, D)
    if impl == "closed":
        return selective_scan_chunked(u, delta, A, B, C, D, intra="closed")
    if impl == "ref":
        return selective_scan_ref(u, delta, A, B, C, D)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
