"""The chunked selective scan in pure PyTorch (CPU or CUDA): Mamba's S6 recurrence, chunk by chunk, with an
analytic backward. Shapes and the recurrence: :mod:`forecast.layers.selective_scan`.

T is cut into chunks of K tokens and the
  state is carried sequentially from chunk to chunk. It is a ``torch.autograd.Function`` whose backward
  recomputes each chunk from its saved start state and back-propagates analytically (the adjoint recurrence
  ``G_t = ∂L/∂s_t + exp(Δ_{t+1} A) G_{t+1}``), so memory is O(T·(Di + Ns)) for the inputs, O(T/K·Di·Ns) for
  the chunk start states, plus one chunk's working set. Inside a chunk the states are computed either

  * ``intra="recurrent"`` (default): K in-place steps ``s_t = a_t s_{t-1} + x_t`` on cache-sized tensors
    (the forward holds the states as ``[k, B, Ns, Di]``, Di innermost; the backward as ``[k, B, Di, Ns]``, the
    layout its reductions were written and checked in; the two layouts give the same states, bit for bit), or
  * ``intra="closed"`` (``impl="closed"``): the closed form ``s_t = Σ_{r≤t} exp(S_t - S_r) x_r + exp(S_t) s_0``
    with ``S_t = A·cumsum(Δ)``; the exponent matrix has its upper triangle masked to -inf *before* the exp,
    and the contraction over r is a batched matmul in the layout ``[B, Di, Ns, t, r]``. Memory per chunk is
    O(K²·B·Di·Ns) and its work is K times the recurrence's (A differs per (d, n), so unlike Mamba-2 no
    decay matrix is shared across channels). It is kept as a cross-check and an option, not the default.

  Measured on the 2-core CPU (forward+backward of the scan alone, Di=128, Ns=16, best of 3, same process):
  B=32, 1 thread: T=321 recurrent K=16 0.26-0.27 s vs 0.82-1.24 s for an autograd loop over ``unbind(1)``
  (closed K=4 1.6 s, K=8 2.8 s); T=862 0.72 s vs 2.09 s. B=8, T=321: 0.07-0.12 s vs 0.14-0.21 s. Extra peak
  RSS over the inputs (B=32, 2 threads): 87 MB vs 685 MB at T=321, 147 MB vs 1897 MB at T=862. With 2
  threads and the other core busy, every variant slows down 2-10x (each parallel region waits for the
  descheduled thread) and the margin shrinks, e.g. B=32 T=321 1.1-1.5 s vs 2.3 s.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor


INTRA_CHUNK = ("recurrent", "closed")
# Automatic chunk size: about 2^20 state elements (4 MB in fp32) per chunk, i.e. cache-sized working tensors,
# clamped to [16, 64] tokens. On the 2-core CPU, B=32/Di=128/Ns=16 is fastest at 8-16 tokens (64 is 1.6x slower),
# while at B=8 16-64 tie and larger chunks mean fewer parallel regions, which matters when the cores are shared.
CHUNK_ELEMENTS = 1 << 20
CHUNK_MIN, CHUNK_MAX = 16, 64


def _compute_dtype(x: Tensor) -> torch.dtype:
    """fp32 for fp32/fp16/bf16 inputs (mamba_ssm upcasts in its scan too); fp64 stays fp64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def auto_chunk_size(bsz: int, d_inner: int, d_state: int) -> int:
    """Tokens per chunk for a state of ``[bsz, d_inner, d_state]``: ~CHUNK_ELEMENTS per chunk, in [16, 64]."""
    return max(CHUNK_MIN, min(CHUNK_MAX, CHUNK_ELEMENTS // max(1, bsz * d_inner * d_state)))


def _check_shapes(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be [B, T, Di], got {tuple(u.shape)} and {tuple(delta.shape)}")
    bsz, t, di = u.shape
    if A.dim() != 2 or A.shape[0] != di:
        raise ValueError(f"A must be [Di={di}, Ns], got {tuple(A.shape)}")
    ns = A.shape[1]
    for name, m in (("B", B), ("C", C)):
        if tuple(m.shape) != (bsz, t, ns):
            raise ValueError(f"{name} must be [B, T, Ns] = {(bsz, t, ns)}, got {tuple(m.shape)}")
    if D is not None and tuple(D.shape) != (di,):
        raise ValueError(f"D must be [Di={di}], got {tuple(D.shape)}")


def _discretize(dl: Tensor, uu: Tensor, A: Tensor, Bc: Tensor) -> tuple[Tensor, Tensor]:
    """dl, uu [k, B, Di], A [Di, Ns], Bc [k, B, Ns] -> a = exp(ΔA), x = Δ·u·B, both [k, B, Di, Ns]."""
    a = torch.exp(dl.unsqueeze(-1) * A)
    x = (dl * uu).unsqueeze(-1) * Bc.unsqueeze(2)
    return a, x


def _discretize_nd(dl: Tensor, uu: Tensor, At: Tensor, Bc: Tensor) -> tuple[Tensor, Tensor]:
    """The same a and x as :func:`_discretize`, element for element, laid out ``[k, B, Ns, Di]`` (At = Aᵀ,
    [Ns, Di]): Di is innermost, so each product and the exp run over Di contiguous values. With Ns innermost (2 in
    most official S-Mamba scripts) they ran on pairs, and ``@`` then copied the states to contiguous rows: the
    forward scan took 2.8x as long at Ns = 2 (``benchmarks/results/scan_layout.md``)."""
    a = torch.exp(dl.unsqueeze(2) * At)
    x = (dl * uu).unsqueeze(2) * Bc.unsqueeze(-1)
    return a, x


def _states_recurrent(a: Tensor, x: Tensor, h0: Tensor) -> Tensor:
    """s_t = a_t s_{t-1} + x_t for t in the chunk, s_{-1} = h0 (``[B, Di, Ns]``, or ``[B, Ns, Di]`` with
    :func:`_discretize_nd`); overwrites and returns x."""
    x[0].addcmul_(a[0], h0)
    for t in range(1, x.shape[0]):
        x[t].addcmul_(a[t], x[t - 1])
    return x


def _adjoint_recurrent(a: Tensor, g: Tensor, g_in: Tensor) -> Tensor:
    """G_t = g_t + a_{t+1} G_{t+1}, with a_k G_k := g_in (from the next chunk); overwrites and returns g."""
    k = g.shape[0]
    g[k - 1].add_(g_in)
    for t in range(k - 2, -1, -1):
        g[t].addcmul_(a[t + 1], g[t + 1])
    return g


def _decay_closed(dl: Tensor, A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form decays of one chunk from Δ: dl [k, B, Di], A [Di, Ns].

    Returns S [B, Di, Ns, k] with S_t = A·Σ_{r≤t} Δ_r, the masked decay matrix L [B, Di, Ns, t, r] with
    L[t, r] = exp(S_t - S_r) for r ≤ t and 0 above the diagonal, and the decay to the chunk end
    exp(S_{k-1} - S_t) [B, Di, Ns, k]. A is input-independent, so the pairwise differences are taken on
    cumsum(Δ) [B, Di, k] (no Ns axis) and scaled by A afterwards; -inf goes in before the exp.
    """
    k = dl.shape[0]
    cum = dl.cumsum(0).permute(1, 2, 0)  # [B, Di, k]
    a4 = A[None, :, :, None]  # [1, Di, Ns, 1]
    S = a4 * cum.unsqueeze(2)  # [B, Di, Ns, k]
    seg = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).unsqueeze(2) * a4.unsqueeze(-1)  # [B, Di, Ns, t, r]
    upper = torch.ones(k, k, dtype=torch.bool, device=dl.device).triu(1)  # r > t
    L = seg.masked_fill_(upper, float("-inf")).exp_()
    to_end = (a4 * (cum[..., -1:] - cum).unsqueeze(2)).exp_()  # [B, Di, Ns, k]
    return S, L, to_end


def _states_closed(S: Tensor, L: Tensor, x: Tensor, h0: Tensor) -> Tensor:
    """s_t = Σ_r L[t, r] x_r + exp(S_t) h0. x [k, B, Di, Ns], h0 [B, Di, Ns] -> [k, B, Di, Ns] (a view)."""
    xr = x.permute(1, 2, 3, 0).unsqueeze(-1)  # [B, Di, Ns, r, 1]
    s = (L @ xr).squeeze(-1) + S.exp() * h0.unsqueeze(-1)  # [B, Di, Ns, t]
    return s.permute(3, 0, 1, 2)


def _adjoint_closed(L: Tensor, to_end: Tensor, g: Tensor, g_in: Tensor) -> Tensor:
    """G_t = Σ_{r≥t} L[r, t] g_r + exp(S_{k-1} - S_t) g_in; the transpose of :func:`_states_closed`."""
    gr = g.permute(1, 2, 3, 0).unsqueeze(-1)  # [B, Di, Ns, r, 1]
    G = (L.transpose(-1, -2) @ gr).squeeze(-1) + to_end * g_in.unsqueeze(-1)  # [B, Di, Ns, t]
    return G.permute(3, 0, 1, 2)


def _time_first(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``[B, T, *] -> [T, B, *]``, contiguous: each token's rows are one block, so a chunk's products and the
    state matmuls read them without strided gathers or the copies that ``@`` made of strided operands."""
    return tuple(t.transpose(0, 1).contiguous() for t in tensors)


class _ChunkedScan(torch.autograd.Function):
    """y_t = Σ_n C_t[n] s_t[:, n] (no D term) over chunks; inputs already in the compute dtype."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int, intra: str) -> Tensor:
        with _no_autocast(u.device):
            uT, dT, BT, CT = _time_first(u, delta, B, C)
            T, bsz, di = uT.shape
            ns = A.shape[1]
            n_chunks = -(-T // chunk)
            y = uT.new_empty(T, bsz, di)  # [T, B, Di]
            starts = uT.new_zeros(n_chunks, bsz, ns, di)  # state entering each chunk, [B, Ns, Di]
            At = A.t().contiguous()  # [Ns, Di]
            for c in range(n_chunks):
                sl = slice(c * chunk, (c + 1) * chunk)
                if intra == "recurrent":
                    s = _states_recurrent(*_discretize_nd(dT[sl], uT[sl], At, BT[sl]), starts[c])  # [k, B, Ns, Di]
                    torch.matmul(CT[sl].unsqueeze(-2), s, out=y[sl].unsqueeze(-2))  # [k, B, 1, Ns] @ [k, B, Ns, Di]
                    last = s[-1]
                else:
                    a, x = _discretize(dT[sl], uT[sl], A, BT[sl])  # [k, B, Di, Ns]
                    S, L, _ = _decay_closed(dT[sl], A)
                    s = _states_closed(S, L, x, starts[c].transpose(-1, -2))
                    y[sl] = (s @ CT[sl].unsqueeze(-1)).squeeze(-1)  # [k, B, Di, Ns] @ [k, B, Ns, 1] -> [k, B, Di]
                    last = s[-1].transpose(-1, -2)
                if c + 1 < n_chunks:
                    starts[c + 1].copy_(last)
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.chunk, ctx.intra = chunk, intra
        return y.transpose(0, 1)  # [B, T, Di]

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        u, delta, A, B, C, starts = ctx.saved_tensors
        chunk, intra = ctx.chunk, ctx.intra
        with _no_autocast(u.device):
            uT, dT, BT, CT, gyT = (t.transpose(0, 1) for t in (u, delta, B, C, gy.to(u.dtype)))
            gu, gd = torch.empty_like(uT), torch.empty_like(uT)  # [T, B, Di]
            gB, gC = torch.empty_like(BT), torch.empty_like(CT)  # [T, B, Ns]
            gA = torch.zeros_like(A)  # [Di, Ns]
            # a_{t+1} G_{t+1} flowing into the previous chunk's last state, [B, Di, Ns]
            g_in = A.new_zeros(uT.shape[1], *A.shape)
            for c in reversed(range(starts.shape[0])):
                sl = slice(c * chunk, (c + 1) * chunk)
                dl, uu, Bc, Cc, gyc = dT[sl], uT[sl], BT[sl], CT[sl], gyT[sl]
                h0 = starts[c].transpose(-1, -2)  # [B, Di, Ns], a view: the backward keeps the Ns-last layout
                a, x = _discretize(dl, uu, A, Bc)
                g = gyc.unsqueeze(-1) * Cc.unsqueeze(2)  # ∂L/∂s_t through y_t only  [k, B, Di, Ns]
                if intra == "recurrent":
                    s = _states_recurrent(a, x, h0)
                    G = _adjoint_recurrent(a, g, g_in)  # total ∂L/∂s_t
                else:
                    S, L, to_end = _decay_closed(dl, A)
                    s = _states_closed(S, L, x, h0)
                    G = _adjoint_closed(L, to_end, g, g_in)
                g_in = a[0] * G[0]
                gC[sl] = (gyc.unsqueeze(-2) @ s).squeeze(-2)  # Σ_d gy s   [k, B, Ns]
                GB = (G @ Bc.unsqueeze(-1)).squeeze(-1)  # Σ_n G B   [k, B, Di]
                torch.mul(GB, dl, out=gu[sl])  # written in place: no product to copy in
                gB[sl] = ((dl * uu).unsqueeze(-2) @ G).squeeze(-2)  # Σ_d G Δu   [k, B, Ns]
                # Q = ∂L/∂(Δ_t A) = G_t ⊙ a_t ⊙ s_{t-1}; mul_ on the slices (``Q[1:] *= ...`` would copy each
                # slice back onto itself afterwards: Python's augmented item assignment)
                Q = G * a
                Q[1:].mul_(s[:-1])
                Q[0].mul_(h0)
                torch.add(GB * uu, (Q * A).sum(-1), out=gd[sl])
                gA += torch.einsum("kbdn,kbd->dn", Q, dl)
        return gu.transpose(0, 1), gd.transpose(0, 1), gA, gB.transpose(0, 1), gC.transpose(0, 1), None, None


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    chunk_size: int | None = None,
    intra: str = "recurrent",
) -> Tensor:
    """The chunked selective scan in pure PyTorch (CPU or CUDA), differentiable w.r.t. all inputs.

    Shapes as in the module docstring; ``chunk_size`` None picks :func:`auto_chunk_size`; ``intra`` picks
    how states are computed inside a chunk (``recurrent`` or ``closed``).
    """
    _check_shapes(u, delta, A, B, C, D)
    if intra not in INTRA_CHUNK:
        raise ValueError(f"intra must be one of {INTRA_CHUNK}, got {intra!r}")
    if chunk_size is None:
        chunk_size = auto_chunk_size(u.shape[0], u.shape[2], A.shape[1])
        if intra == "closed":
            chunk_size = CHUNK_MIN  # its working set grows with chunk_size squared
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cd = _compute_dtype(u)
    u_ = u.to(cd)
    y = _ChunkedScan.apply(u_, delta.to(cd), A.to(cd), B.to(cd), C.to(cd), chunk_size, intra)  # [B, T, Di]
    if D is not None:
        y = y + u_ * D.to(cd)
    return y.to(u.dtype)
