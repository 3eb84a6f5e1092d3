"""Attention layers and the attention-family forecasters (iTransformer, iFlowformer, Flowformer).

Flow-Attention is checked against a naive O(L*S) reference written here from the paper's equations
(docs: shared/design/model_specs.md §5.1-5.2), for symmetry (permutation equivariance, causality) and
for linear memory, measured as the largest tensor any aten op produces.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from forecast.layers.attention import AttentionLayer, FullAttention
from forecast.layers.flow_attention import CausalFlowAttention, FlowAttention
from forecast.models import ModelContext, build_config, create_model

EPS = 1e-6


# --- naive references -------------------------------------------------------------------------------


def _flow_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Non-causal Flow-Attention for one head, entry by entry: q [L, d], k [S, d], v [S, dv] -> [L, dv]."""
    L, S = q.shape[0], k.shape[0]
    pq, pk = torch.sigmoid(q), torch.sigmoid(k)
    I = torch.stack([(pq[i] + eps) @ (pk.sum(0) + eps) for i in range(L)])  # sink incoming flows
    O = torch.stack([(pk[j] + eps) @ (pq.sum(0) + eps) for j in range(S)])  # source outgoing flows
    I_hat = torch.stack([(pq[i] + eps) @ ((pk / O[:, None]).sum(0) + eps) for i in range(L)])
    O_hat = torch.stack([(pk[j] + eps) @ ((pq / I[:, None]).sum(0) + eps) for j in range(S)])
    weight = torch.softmax(O_hat, dim=0) * S  # competition
    alloc = torch.sigmoid(I_hat * L / S)  # allocation
    out = torch.zeros(L, v.shape[1], dtype=q.dtype)
    for i in range(L):
        for j in range(S):
            out[i] += (pq[i] @ pk[j]) * weight[j] * v[j]  # capacity-weighted value
        out[i] *= alloc[i] / I[i]
    return out


def _causal_flow_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Causal Flow-Attention (§5.2) for one head, entry by entry: q, k [L, d], v [L, dv] -> [L, dv]."""
    L = q.shape[0]
    pq, pk = torch.sigmoid(q), torch.sigmoid(k)
    c = torch.arange(1, L + 1, dtype=q.dtype)
    I = torch.stack([(pq[i] + eps) @ (pk[: i + 1].sum(0) + eps) for i in range(L)])
    O = torch.stack([(pk[j] + eps) @ (pq[: j + 1].sum(0) + eps) for j in range(L)])
    ko = pk * (c / O)[:, None]  # phi(k_j) c_j / O_j
    qi = pq * (c / I)[:, None]  # phi(q_i) c_i / I_i
    I_hat = torch.stack([(pq[i] + eps) @ (ko[: i + 1].sum(0) + eps) / c[i] for i in range(L)])
    O_hat = torch.stack([(pk[j] + eps) @ (qi[: j + 1].sum(0) + eps) / c[j] for j in range(L)]).clamp(-1, 1)
    weight = torch.stack([O_hat[j].exp() / O_hat[: j + 1].exp().sum() * c[j] for j in range(L)])
    alloc = torch.sigmoid(I_hat)
    out = torch.zeros(L, v.shape[1], dtype=q.dtype)
    for i in range(L):
        for j in range(i + 1):
            out[i] += (pq[i] @ pk[j]) * weight[j] * v[j]
        out[i] *= alloc[i] / I[i]
    return out


def _per_head(ref, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # q [B, L, h, d], k [B, S, h, d], v [B, S, h, dv] -> [B, L, h, dv], one reference call per (batch, head)
    B, L, h, _ = q.shape
    out = torch.zeros(B, L, h, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for head in range(h):
            out[b, :, head] = ref(q[b, :, head], k[b, :, head], v[b, :, head])
    return out


def _qkv(B: int, L: int, S: int, h: int = 2, d: int = 3, dv: int = 4, scale: float = 1.5):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, L, h, d, generator=g, dtype=torch.float64) * scale
    k = torch.randn(B, S, h, d, generator=g, dtype=torch.float64) * scale
    v = torch.randn(B, S, h, dv, generator=g, dtype=torch.float64)
    return q, k, v


# --- Flow-Attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("L,S", [(6, 6), (5, 8), (9, 4)])
def test_flow_attention_matches_naive_reference(L: int, S: int) -> None:
    q, k, v = _qkv(2, L, S)
    out = FlowAttention()(q, k, v)
    assert out.shape == (2, L, 2, 4)
    torch.testing.assert_close(out, _per_head(_flow_reference, q, k, v), atol=1e-5, rtol=1e-5)


def test_causal_flow_attention_matches_naive_reference() -> None:
    q, k, v = _qkv(2, 7, 7)
    out = CausalFlowAttention()(q, k, v)
    torch.testing.assert_close(out, _per_head(_causal_flow_reference, q, k, v), atol=1e-5, rtol=1e-5)


def test_flow_attention_is_permutation_equivariant() -> None:
    q, k, v = _qkv(2, 8, 8)
    flow = FlowAttention()
    out = flow(q, k, v)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    # permuting all tokens permutes the outputs
    torch.testing.assert_close(flow(q[:, perm], k[:, perm], v[:, perm]), out[:, perm])
    # permuting only the sources (keys with their values) changes nothing
    torch.testing.assert_close(flow(q, k[:, perm], v[:, perm]), out)


@pytest.mark.parametrize("attn", [CausalFlowAttention(), FullAttention(dropout=0.0, causal=True)], ids=["flow", "full"])
def test_causal_attention_never_looks_ahead(attn: torch.nn.Module) -> None:
    L = 10
    q, k, v = _qkv(2, L, L)
    out = attn(q, k, v)
    for j in (0, 4, L - 1):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        q2[:, j] += 1.0
        k2[:, j] -= 2.0
        v2[:, j] += 3.0
        out2 = attn(q2, k2, v2)
        torch.testing.assert_close(out2[:, :j], out[:, :j], atol=0, rtol=0)  # earlier outputs untouched
        assert not torch.allclose(out2[:, j], out[:, j])  # the perturbed step itself does change


def test_full_attention_matches_softmax_formula_with_mask() -> None:
    q, k, v = _qkv(2, 5, 7)
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[:, 0] = True  # every query sees at least one key
    out = FullAttention(dropout=0.0)(q, k, v, mask)
    scores = torch.einsum("blhd,bshd->bhls", q, k) / q.shape[-1] ** 0.5
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(out, torch.einsum("bhls,bshe->blhe", weights, v))


# --- linear memory ----------------------------------------------------------------------------------


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_tensor(attn: torch.nn.Module, L: int) -> int:
    q, k, v = (torch.randn(1, L, 2, 8, requires_grad=True) for _ in range(3))
    with _LargestTensor() as probe:
        attn(q, k, v).sum().backward()
    return probe.largest


def _growth(attn: torch.nn.Module) -> float:
    return _largest_tensor(attn, 1024) / _largest_tensor(attn, 256)


@pytest.mark.parametrize("attn", [FlowAttention(), CausalFlowAttention()], ids=["flow", "causal_flow"])
def test_flow_attention_memory_is_linear(attn: torch.nn.Module) -> None:
    assert _growth(attn) <= 4.5  # 4x tokens -> at most ~4x the largest intermediate


def test_memory_probe_detects_quadratic_full_attention() -> None:
    # The math backend materializes the [B, h, L, S] weights, as the paper's full attention does.
    # (Fused CPU/GPU kernels avoid storing them, but their time stays quadratic.)
    with sdpa_kernel(SDPBackend.MATH):
        growth = _growth(FullAttention(dropout=0.0))
    assert growth > 12  # ~16 for 4x tokens: the check above can fail


# --- forecasters ------------------------------------------------------------------------------------

SMALL = {"d_model": 16, "d_ff": 32, "n_heads": 4, "e_layers": 1, "dropout": 0.0}


def _model(name: str, L: int, H: int, N: int, C: int, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = build_config(name, {**SMALL, **params})
    return create_model(name, cfg, ModelContext(seq_len=L, horizon=H, n_vars=N, n_marks=C)).eval()


def _inputs(B: int, L: int, H: int, N: int, C: int):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, L, N, generator=g)
    x_mark = torch.rand(B, L, C, generator=g) - 0.5 if C else None
    y_mark = torch.rand(B, H, C, generator=g) - 0.5 if C else None
    return x, x_mark, y_mark


@pytest.mark.parametrize("name", ["itransformer", "iflowformer", "flowformer"])
@pytest.mark.parametrize("N", [1, 7, 321])
@pytest.mark.parametrize("C", [4, 0], ids=["marks", "no_marks"])
def test_forecaster_shapes(name: str, N: int, C: int) -> None:
    L, H, B = 24, 12, 2
    model = _model(name, L, H, N, C, **({"label_len": 8} if name == "flowformer" else {}))
    with torch.no_grad():
        y = model(*_inputs(B, L, H, N, C))
    assert y.shape == (B, H, N)
    assert torch.isfinite(y).all()


def test_iflowformer_is_itransformer_with_flow_attention() -> None:
    flow = _model("iflowformer", 24, 12, 7, 4).backbone
    full = _model("itransformer", 24, 12, 7, 4).backbone
    assert isinstance(flow.encoder.layers[0].mixer.inner, FlowAttention)
    assert isinstance(full.encoder.layers[0].mixer.inner, FullAttention)


@pytest.mark.parametrize("name", ["itransformer", "iflowformer"])
def test_inverted_models_accept_any_number_of_variates(name: str) -> None:
    L, H = 24, 12
    model = _model(name, L, H, 7, 4)  # built for 7 variates
    for n in (3, 7, 50):
        x, x_mark, y_mark = _inputs(2, L, H, n, 4)
        with torch.no_grad():
            assert model(x, x_mark, y_mark).shape == (2, H, n)
    x, _, _ = _inputs(2, L, H, 1, 0)
    with torch.no_grad():
        assert model(x, None).shape == (2, H, 1)  # a single variate and no marks: one token


def test_itransformer_parameter_count_matches_paper_setting() -> None:
    # ETTh1, H = 96, D = F = 256, E = 2, 4 time marks: the official model has 841,568 parameters.
    cfg = build_config("itransformer", {"d_model": 256, "d_ff": 256, "e_layers": 2})
    model = create_model("itransformer", cfg, ModelContext(seq_len=96, horizon=96, n_vars=7, n_marks=4))
    assert sum(p.numel() for p in model.parameters()) == 841_568


def test_itransformer_uses_marks_as_tokens() -> None:
    L, H, N, C = 24, 12, 7, 4
    x, x_mark, y_mark = _inputs(2, L, H, N, C)
    with torch.no_grad():
        with_marks = _model("itransformer", L, H, N, C)
        assert not torch.allclose(with_marks(x, x_mark), with_marks(x, x_mark + 0.3))
        without = _model("itransformer", L, H, N, C, use_marks=False)
        torch.testing.assert_close(without(x, x_mark), without(x, x_mark + 0.3))


def test_flowformer_decoder_uses_y_mark() -> None:
    L, H, N, C = 24, 12, 7, 4
    model = _model("flowformer", L, H, N, C, label_len=8)
    x, x_mark, y_mark = _inputs(2, L, H, N, C)
    with torch.no_grad():
        y = model(x, x_mark, y_mark)
        assert not torch.allclose(y, model(x, x_mark, y_mark + 0.3))  # x and x_mark unchanged
        # the marks of the last horizon step reach the last output (through the decoder only)
        late = y_mark.clone()
        late[:, -1] += 0.3
        y2 = model(x, x_mark, late)
        assert not torch.allclose(y2[:, -1], y[:, -1])
        torch.testing.assert_close(y2[:, :-1], y[:, :-1])  # and, by the causal mask, nothing earlier


def test_flowformer_decoder_masks_only_its_self_attention() -> None:
    model = _model("flowformer", 24, 12, 7, 4, label_len=8).backbone
    layer = model.decoder.layers[0]
    assert isinstance(layer.self_attn.inner, FullAttention) and layer.self_attn.inner.causal
    assert isinstance(layer.cross_attn.inner, FullAttention) and not layer.cross_attn.inner.causal
    assert all(isinstance(enc.mixer.inner, FlowAttention) for enc in model.encoder.layers)
    # behaviour: a later decoder token never reaches an earlier one; every encoder token reaches all of them
    g = torch.Generator().manual_seed(4)
    h, memory = torch.randn(2, 20, 16, generator=g), torch.randn(2, 24, 16, generator=g)
    with torch.no_grad():
        out = layer(h, memory)
        h2 = h.clone()
        h2[:, 12] += 1.0
        out2 = layer(h2, memory)
        torch.testing.assert_close(out2[:, :12], out[:, :12])
        assert not torch.allclose(out2[:, 12:], out[:, 12:])
        memory2 = memory.clone()
        memory2[:, -1] += 1.0
        changed = (layer(h, memory2) - out).abs().amax(dim=-1) > 1e-6  # [B, T]
        assert changed.all()


def test_flowformer_clips_label_len_to_the_lookback() -> None:
    L, H, N, C = 16, 8, 3, 4
    model = _model("flowformer", L, H, N, C, label_len=48)
    assert model.backbone.label_len == L
    with torch.no_grad():
        assert model(*_inputs(2, L, H, N, C)).shape == (2, H, N)


def test_causal_attention_with_fewer_queries_answers_the_last_positions() -> None:
    q, k, v = _qkv(2, 9, 9)
    attn = FullAttention(dropout=0.0, causal=True)
    torch.testing.assert_close(attn(q[:, -4:], k, v), attn(q, k, v)[:, -4:], atol=0, rtol=0)


@pytest.mark.parametrize("d_layers", [1, 2])
@pytest.mark.parametrize("C", [4, 0], ids=["marks", "no_marks"])
@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("size", ["small", "paper"])
def test_flowformer_eval_decodes_the_horizon_alone_to_the_same_bits(d_layers: int, C: int, B: int, size: str) -> None:
    # in eval the last decoder layer computes the H horizon positions only (the warm-up rows' outputs are never
    # read); without dropout, train mode decodes every position, so the two must be the same bits
    # (paper: run.py's widths, D 512 and F 2048, at L = H = 96 and label 48 with Weather's 21 variates)
    L, H, N, label = (24, 12, 7, 8) if size == "small" else (96, 96, 21, 48)
    widths = {} if size == "small" else {"d_model": 512, "d_ff": 2048, "n_heads": 8}
    model = _model("flowformer", L, H, N, C, label_len=label, d_layers=d_layers, **widths)
    inputs = _inputs(B, L, H, N, C)
    with torch.no_grad():
        pruned = model.eval()(*inputs)
        full = model.train()(*inputs)
    assert torch.equal(pruned, full)
