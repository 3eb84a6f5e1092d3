"""Selective scan, Mamba block and S-Mamba: exactness against the sequential definition, the bidirectional
flip, the shape contract, the reference init and (when mambapy is installed) equality with mambapy's block."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from forecast.layers.mamba import MambaBlock
from forecast.layers.selective_scan import (
    active_scan_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_ref,
)
from forecast.models import ModelContext, build_config, create_model
from forecast.models.smamba import BiMamba


def _scan_inputs(bsz: int, T: int, di: int, ns: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(bsz, T, di, generator=g, dtype=dtype)
    delta = F.softplus(torch.randn(bsz, T, di, generator=g, dtype=dtype) - 1.0)  # [B, T, Di], > 0
    A = -torch.exp(torch.randn(di, ns, generator=g, dtype=dtype))  # [Di, Ns], < 0
    B = torch.randn(bsz, T, ns, generator=g, dtype=dtype)
    C = torch.randn(bsz, T, ns, generator=g, dtype=dtype)
    D = torch.randn(di, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (u, delta, A, B, C, D)]


def _value_and_grads(fn, inputs, weight):
    y = fn(*inputs)
    grads = torch.autograd.grad((y * weight).sum(), inputs)
    return y, grads


@pytest.mark.parametrize("intra", ["recurrent", "closed"])
@pytest.mark.parametrize("d_state", [2, 16])
@pytest.mark.parametrize("T", [1, 7, 64, 321])
def test_chunked_scan_matches_sequential_reference(T: int, d_state: int, intra: str) -> None:
    inputs = _scan_inputs(2, T, 3, d_state)
    weight = torch.randn(2, T, 3, dtype=torch.float64)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, inputs, weight)
    # chunk 16 leaves a partial last chunk for T = 1, 7 and 321; chunk 5 gives many chunks with a remainder;
    # None is the automatic size (64 tokens here, 16 for the closed form).
    for chunk in (16, 5, None):
        fn = lambda *a: selective_scan_chunked(*a, chunk_size=chunk, intra=intra)  # noqa: E731
        y, grads = _value_and_grads(fn, inputs, weight)
        torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=0)
        for name, g, gr in zip(("u", "delta", "A", "B", "C", "D"), grads, g_ref):
            torch.testing.assert_close(g, gr, atol=1e-4, rtol=0, msg=f"grad {name} (chunk {chunk})")


def _ns_last_forward(u, delta, A, B, C, chunk):  # noqa: ANN001, ANN202
    """The chunked forward as it was written before its states went Di-innermost: ``[k, B, Di, Ns]`` states on
    strided time-first views, ``y = s @ C``."""
    from forecast.layers.scan_chunked import _discretize, _states_recurrent

    uT, dT, BT, CT = (t.transpose(0, 1) for t in (u, delta, B, C))
    y, h = uT.new_empty(uT.shape), uT.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    for c in range(-(-u.shape[1] // chunk)):
        sl = slice(c * chunk, (c + 1) * chunk)
        s = _states_recurrent(*_discretize(dT[sl], uT[sl], A, BT[sl]), h)
        y[sl] = (s @ CT[sl].unsqueeze(-1)).squeeze(-1)
        h = s[-1].clone()
    return y.transpose(0, 1)


@pytest.mark.parametrize("shape", [(32, 11, 256, 2), (16, 37, 64, 16)])
def test_chunked_forward_layout_gives_the_same_bits(shape: tuple[int, int, int, int]) -> None:
    """The forward's Di-innermost states (forecast.layers.scan_chunked._discretize_nd) make every S-Mamba number
    what the Ns-innermost layout made: fp32, one chunk (ETTh1's shape) and several with a remainder. At d_state 2
    (most official scripts') to the bit; at 16 the read-out's 16-term dot product is summed in the order of the
    CPU's matmul kernel for each layout: the same bits on an AMD EPYC, within 2 ulp of the largest value on an
    Intel Xeon."""
    from forecast.layers.scan_chunked import _ChunkedScan

    bsz, T, di, ns = shape
    u, delta, A, B, C, _ = (t.detach() for t in _scan_inputs(bsz, T, di, ns, dtype=torch.float32))
    u = u.transpose(1, 2).contiguous().transpose(1, 2)  # strided, as the block's conv hands it over
    for chunk in (16, 64):
        with torch.no_grad():
            got = _ChunkedScan.apply(u, delta, A, B, C, chunk, "recurrent")
        want = _ns_last_forward(u, delta, A, B, C, chunk)
        if ns <= 2:
            assert torch.equal(got, want), f"chunk {chunk}"
        else:
            ulp = torch.finfo(torch.float32).eps * want.abs().max()  # a sum's rounding scales with its terms
            torch.testing.assert_close(got, want, rtol=0, atol=4 * float(ulp))


def test_chunked_scan_fp32_without_skip() -> None:
    inputs = _scan_inputs(2, 40, 4, 4, dtype=torch.float32)[:5]  # no D
    weight = torch.randn(2, 40, 4)
    y_ref, g_ref = _value_and_grads(selective_scan_ref, inputs, weight)
    y, grads = _value_and_grads(selective_scan, inputs, weight)  # impl="auto" -> chunked on CPU
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    for g, gr in zip(grads, g_ref):
        torch.testing.assert_close(g, gr, atol=1e-4, rtol=1e-4)


def test_scan_dispatch_on_cpu() -> None:
    assert active_scan_backend("cpu") == "chunked (pure PyTorch)"
    inputs = [t.detach() for t in _scan_inputs(1, 5, 2, 2)]
    with pytest.raises(ValueError, match="impl must be one of"):
        selective_scan(*inputs, impl="nope")
    with pytest.raises(RuntimeError, match="mamba-ssm"):
        selective_scan(*inputs, impl="mamba-ssm")  # CPU tensors never use the kernel
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(inputs[0], inputs[1], inputs[2], inputs[3][:, :4], inputs[4], inputs[5])


def test_cuda_kernel_call_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mamba_ssm call gets its channel-major layout; checked with a stand-in kernel (no CUDA needed)."""
    import forecast.layers.selective_scan as ss

    bsz, T, di, ns = 2, 9, 3, 4

    def fake_kernel(u, delta, A, B, C, D=None):  # mamba_ssm's selective_scan_fn signature and layout
        assert u.shape == delta.shape == (bsz, di, T) and B.shape == C.shape == (bsz, ns, T)
        assert all(t.is_contiguous() for t in (u, delta, A, B, C)) and A.dtype == torch.float32
        y = selective_scan_ref(u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D)
        return y.transpose(1, 2)

    monkeypatch.setattr(ss, "_mamba_ssm_fn", lambda: fake_kernel)
    assert active_scan_backend("cuda") == "mamba-ssm CUDA kernel"
    assert active_scan_backend("cpu") == "chunked (pure PyTorch)"
    inputs = [t.detach().float() for t in _scan_inputs(bsz, T, di, ns)]
    torch.testing.assert_close(ss._selective_scan_kernel(*inputs), selective_scan_ref(*inputs))


def test_mamba_block_reference_init() -> None:
    torch.manual_seed(0)
    block = MambaBlock(d_model=64, d_state=5)
    assert block.dt_rank == math.ceil(64 / 16)
    dt = F.softplus(block.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.max() / dt.min() > 10  # spread log-uniformly over the range, not a constant
    bound = block.dt_rank**-0.5
    assert block.dt_proj.weight.abs().max() <= bound
    torch.testing.assert_close(block.A_log.detach(), torch.log(torch.arange(1.0, 6.0)).repeat(64, 1))
    torch.testing.assert_close(block.D.detach(), torch.ones(64))
    # d_conv = 2, expand = 1 (S-Mamba's values): 207,616 parameters at D = 256, Ns = 2 (model_specs.md §3).
    assert sum(p.numel() for p in MambaBlock(256, 2).parameters()) == 207_616


def test_mamba_block_is_causal() -> None:
    torch.manual_seed(0)
    block = MambaBlock(d_model=8, d_state=3)
    h = torch.randn(1, 6, 8, requires_grad=True)
    out = block(h)
    (g,) = torch.autograd.grad(out[0, 2].sum(), h)
    assert g[0, 3:].abs().max() == 0 and g[0, :3].abs().sum(-1).min() > 0


def test_mamba_block_matches_mambapy() -> None:
    mambapy = pytest.importorskip("mambapy.mamba")
    torch.manual_seed(0)
    d_model, d_state = 32, 4
    ours = MambaBlock(d_model, d_state, d_conv=2, expand=1)
    config = mambapy.MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, expand_factor=1, d_conv=2)
    theirs = mambapy.MambaBlock(config)
    # Same names and shapes both ways.
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    h = torch.randn(3, 37, d_model)
    with torch.no_grad():
        torch.testing.assert_close(ours(h), theirs(h), atol=1e-5, rtol=0)


def _jacobian_support(mixer: torch.nn.Module, T: int = 5, d: int = 8) -> torch.Tensor:
    """[T_out, T_in] bool: does output token t depend on input token s?"""
    h = torch.randn(1, T, d, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: mixer(x), h)  # [1, T, d, 1, T, d]
    return jac[0, :, :, 0].abs().sum(dim=(1, 3)) > 0


def test_bimamba_backward_branch_sees_reversed_order() -> None:
    torch.manual_seed(0)
    mixer = BiMamba(d_model=8, d_state=3).double()
    T = 5
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # t depends on s <= t
    assert _jacobian_support(mixer).all()  # both directions together: every token sees every token
    with torch.no_grad():
        mixer.fwd.out_proj.weight.zero_()  # backward branch only
    assert torch.equal(_jacobian_support(mixer), causal.T)  # t sees s >= t (fails without either flip)
    with torch.no_grad():
        mixer.fwd.out_proj.weight.normal_()
        mixer.bwd.out_proj.weight.zero_()  # forward branch only
    assert torch.equal(_jacobian_support(mixer), causal)


def test_bimamba_is_the_sum_of_two_independent_blocks() -> None:
    torch.manual_seed(0)
    mixer = BiMamba(d_model=8, d_state=2)
    h = torch.randn(2, 6, 8)
    expected = mixer.fwd(h) + torch.flip(mixer.bwd(torch.flip(h, dims=[1])), dims=[1])
    torch.testing.assert_close(mixer(h), expected)
    assert mixer.fwd.in_proj.weight.data_ptr() != mixer.bwd.in_proj.weight.data_ptr()
    assert not torch.equal(mixer.fwd.in_proj.weight, mixer.bwd.in_proj.weight)


@pytest.mark.parametrize("with_marks", [True, False])
@pytest.mark.parametrize("n_vars", [1, 7, 321])
def test_smamba_shape_contract(n_vars: int, with_marks: bool) -> None:
    torch.manual_seed(0)
    L, H, C, B = 24, 12, 4, 2
    cfg = build_config("smamba", {"d_model": 16, "d_ff": 16, "e_layers": 1, "d_state": 2})
    model = create_model("smamba", cfg, ModelContext(L, H, n_vars, C if with_marks else 0))
    x = torch.randn(B, L, n_vars)
    x_mark = torch.rand(B, L, C) - 0.5 if with_marks else None
    y = model(x, x_mark, None)
    assert y.shape == (B, H, n_vars)
    assert torch.isfinite(y).all()


def test_smamba_etth1_parameter_count() -> None:
    # ETTh1, H = 96: D = F = 256, E = 2, d_state = 2, 4 time marks (model_specs.md §3: 1,145,696).
    cfg = build_config("smamba", {"d_model": 256, "d_ff": 256, "e_layers": 2, "d_state": 2})
    model = create_model("smamba", cfg, ModelContext(seq_len=96, horizon=96, n_vars=7, n_marks=4))
    assert sum(p.numel() for p in model.parameters()) == 1_145_696


def test_smamba_config_defaults_and_validation() -> None:
    cfg = build_config("smamba", {})
    assert (cfg.d_model, cfg.d_ff, cfg.e_layers, cfg.d_state, cfg.d_conv, cfg.expand) == (512, 512, 2, 32, 2, 1)
    assert (cfg.dropout, cfg.activation, cfg.revin) == (0.1, "gelu", "plain")
    from forecast.errors import ForecastError

    with pytest.raises(ForecastError, match="activation"):
        build_config("smamba", {"activation": "tanh"})
