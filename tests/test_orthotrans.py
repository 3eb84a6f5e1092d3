"""OrthoTrans (Q from train rows, cache, transform), NormLin and OLinear (arXiv 2505.08550), small and fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from forecast.data import orthobasis
from forecast.data.orthobasis import compute_q, load_or_compute_q, orthotrans_extras
from forecast.layers.normlin import NormLin
from forecast.layers.orthotrans import OrthoTrans
from forecast.models import ModelContext, build_config, create_model, extras_from_state, get_spec


def _series(n: int = 400, n_vars: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return 50 + 10 * np.sin(2 * np.pi * t / 24 + np.arange(n_vars)) + rng.standard_normal((n, n_vars)).cumsum(0)


def _reference_q(values: np.ndarray, T: int, min_diag: float = 1e-4) -> np.ndarray:
    """The recipe of model_specs.md §4.1 written plainly with np.cov on the Hankel matrix."""
    mats = []
    for j in range(values.shape[1]):
        hankel = sliding_window_view(values[:, j], len(values) - T + 1)  # [T, n - T + 1]
        cov = np.cov(hankel)  # rows as variables, ddof=1
        if (np.diag(cov) < min_diag).any():
            continue
        mats.append(cov / np.diag(cov)[None, :])
    _, vecs = np.linalg.eigh(np.mean(mats, axis=0))
    return vecs[:, ::-1].T


def _ctx(L: int, H: int, N: int, q_in: torch.Tensor | None = None, q_out: torch.Tensor | None = None) -> ModelContext:
    q_in = torch.linalg.qr(torch.randn(L, L))[0] if q_in is None else q_in
    q_out = torch.linalg.qr(torch.randn(H, H))[0] if q_out is None else q_out
    return ModelContext(seq_len=L, horizon=H, n_vars=N, extras={"q_in": q_in, "q_out": q_out})


# ---------------------------------------------------------------------------------------------- Q


def test_q_is_orthogonal() -> None:
    q = compute_q(_series(), 24)
    assert q.shape == (24, 24)
    assert np.abs(q @ q.T - np.eye(24)).max() < 1e-5


def test_a_one_step_side_gives_a_basis_torch_takes() -> None:
    """H = 1 (or L = 1): Q is [1, 1], and numpy's reversed view of it has a negative stride that it still calls
    contiguous; the bases reach the model as tensors all the same (a ValueError from torch before)."""
    extras = orthotrans_extras(_series(), 200, seq_len=2, horizon=1)
    assert extras["q_out"].shape == (1, 1) and abs(float(extras["q_out"])) == pytest.approx(1.0)
    assert torch.allclose(extras["q_in"] @ extras["q_in"].T, torch.eye(2), atol=1e-6)


def test_q_matches_np_cov_reference() -> None:
    values = _series(300, 4)
    values[:, 2] = 7.0  # a constant variate is skipped (zero lagged variance)
    q, ref = compute_q(values, 16), _reference_q(values, 16)
    # Eigenvector signs are arbitrary; compare up to sign, row by row.
    signs = np.sign((q * ref).sum(axis=1, keepdims=True))
    assert np.abs(q - signs * ref).max() < 1e-8


def test_q_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="T \\+ 1"):
        compute_q(_series(10), 10)
    with pytest.raises(ValueError, match="every one of the 2 variates was skipped"):
        compute_q(np.ones((50, 2)), 8)


def test_q_sees_train_rows_only() -> None:
    values, border, L, H = _series(500), 300, 24, 12
    base = orthotrans_extras(values, border, L, H)
    changed_outside = values.copy()
    changed_outside[border:] += np.random.default_rng(1).standard_normal(changed_outside[border:].shape) * 100
    after = orthotrans_extras(changed_outside, border, L, H)
    for key in ("q_in", "q_out"):
        assert torch.equal(base[key], after[key])
    changed_inside = values.copy()
    changed_inside[: border // 2] *= np.linspace(0.2, 3.0, border // 2)[:, None]
    moved = orthotrans_extras(changed_inside, border, L, H)
    assert not torch.allclose(base["q_in"].abs(), moved["q_in"].abs(), atol=1e-3)
    assert base["q_in"].shape == (L, L) and base["q_out"].shape == (H, H)


def test_cache_hit_does_not_recompute(tmp_path, monkeypatch) -> None:
    train = _series(200)
    q1, cached1 = load_or_compute_q(train, 16, tmp_path, "demo-T16")
    assert not cached1 and (tmp_path / "demo-T16.npy").exists()
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed into place

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a cached Q")

    monkeypatch.setattr(orthobasis, "compute_q", boom)
    q2, cached2 = load_or_compute_q(train, 16, tmp_path, "demo-T16")
    assert cached2 and np.array_equal(q1, q2)
    with pytest.raises(ValueError, match="cache key"):
        load_or_compute_q(train, 16, tmp_path, "../escape")


# -------------------------------------------------------------------------------------- transform


def test_forward_then_inverse_recovers_input() -> None:
    q = torch.as_tensor(compute_q(_series(), 24), dtype=torch.float32)
    ortho = OrthoTrans(q, q, seq_len=24, horizon=24)
    x = torch.randn(2, 3, 5, 24)
    z = ortho.forward_transform(x)
    assert not torch.allclose(z, x)
    assert torch.allclose(ortho.inverse_transform(z), x, atol=1e-5)


def test_wrong_q_for_a_side_names_the_shapes() -> None:
    q96, q192 = torch.eye(96), torch.eye(192)
    with pytest.raises(ValueError, match=r"q_in must be \[96, 96\].*got \[192, 192\].*swapped"):
        OrthoTrans(q192, q96, seq_len=96, horizon=192)
    with pytest.raises(ValueError, match=r"q_out must be \[192, 192\].*got \[96, 96\]"):
        OrthoTrans(q96, q96, seq_len=96, horizon=192)
    with pytest.raises(ValueError, match="not orthogonal"):
        OrthoTrans(2 * q96, q192, seq_len=96, horizon=192)
    with pytest.raises(ValueError, match=r"ctx.extras\['q_in'\]"):
        create_model("olinear", build_config("olinear", {}), ModelContext(seq_len=8, horizon=4, n_vars=2))


def test_a_basis_rounded_to_half_width_floats_is_still_orthogonal_but_a_perturbed_one_is_not() -> None:
    """A basis trained at bf16-true holds bfloat16 values, in whatever dtype it is stored or loaded (a fine-tuned
    child keeps its parent's in float32): it is off the identity by more than 1e-3 at L=96 but within bfloat16's
    rounding, and is accepted; float32 values off by as much are not rounding, and are refused."""
    q = torch.as_tensor(compute_q(_series(), 96), dtype=torch.float32)
    for dtype in (torch.bfloat16, torch.float16):
        rounded = q.to(dtype)
        for held in (rounded, rounded.float(), rounded.double()):
            ortho = OrthoTrans(held, held, seq_len=96, horizon=96)
            assert torch.equal(ortho.q_in, rounded.float())
    off = (q.to(torch.bfloat16).double() @ q.to(torch.bfloat16).double().T - torch.eye(96, dtype=torch.float64))
    assert off.abs().max() > 1e-3  # the bfloat16 case is one the float32 tolerance alone would refuse
    perturbed = q + 4e-3 * torch.randn(q.shape, generator=torch.Generator().manual_seed(0)) / 96**0.5
    with pytest.raises(ValueError, match="not orthogonal"):
        OrthoTrans(perturbed, q, seq_len=96, horizon=96)


def test_normlin_rows_are_a_distribution() -> None:
    torch.manual_seed(0)
    layer = NormLin(n_vars=7, d_model=16, dropout=0.2)
    a = layer.mixing_matrix()
    assert a.shape == (7, 7)
    assert (a >= 0).all()
    assert torch.allclose(a.sum(dim=-1), torch.ones(7), atol=1e-6)
    assert layer(torch.randn(2, 7, 16)).shape == (2, 7, 16)
    with pytest.raises(ValueError, match="N=7"):
        layer(torch.randn(2, 5, 16))


# ----------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("n_vars", [1, 7])
@pytest.mark.parametrize("overrides", [{}, {"orthotrans": False}, {"mixer": "attention", "n_heads": 4}])
def test_olinear_shape_contract(n_vars: int, overrides: dict) -> None:
    torch.manual_seed(0)
    L, H, B = 24, 12, 3
    params = {"d_model": 32, "d_ff": 32, "embed_size": 4, **overrides}
    model = create_model("olinear", build_config("olinear", params), _ctx(L, H, n_vars))
    y = model(torch.randn(B, L, n_vars), None, None)
    assert y.shape == (B, H, n_vars) and torch.isfinite(y).all()


def test_olinear_parameter_count_etth1() -> None:
    model = create_model("olinear", build_config("olinear", {}), _ctx(96, 96, 7))
    # Spec §4.5: 4,518,944, including affine RevIN's 2N; the Q buffers are not parameters.
    assert sum(p.numel() for p in model.parameters()) == 4_518_944
    assert {"backbone.ortho.q_in", "backbone.ortho.q_out"} <= set(model.state_dict())


def test_olinear_state_dict_carries_q() -> None:
    torch.manual_seed(0)
    params = {"d_model": 16, "d_ff": 16, "embed_size": 4}
    a = create_model("olinear", build_config("olinear", params), _ctx(16, 8, 3)).eval()
    b = create_model("olinear", build_config("olinear", params), _ctx(16, 8, 3)).eval()  # other Q and weights
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 3)
    assert torch.equal(a(x), b(x))
    names = get_spec("olinear").extras(build_config("olinear", params))
    assert set(extras_from_state(names, a.state_dict())) == {"q_in", "q_out"}


@pytest.mark.parametrize("name", ["linear", "nlinear", "dlinear"])
@pytest.mark.parametrize("individual", [False, True])
def test_linear_family_with_identity_q_is_unchanged(name: str, individual: bool) -> None:
    L, H, N = 24, 12, 3
    ctx = _ctx(L, H, N, torch.eye(L), torch.eye(H))
    torch.manual_seed(0)
    plain = create_model(name, build_config(name, {"individual": individual}), ctx)
    torch.manual_seed(0)
    ortho = create_model(name, build_config(name, {"individual": individual, "orthotrans": True}), ctx)
    assert set(plain.state_dict()) < set(ortho.state_dict())  # only the Q buffers are added
    for key, value in plain.state_dict().items():
        assert torch.equal(value, ortho.state_dict()[key])
    x = torch.randn(2, L, N)
    assert torch.allclose(plain(x), ortho(x), atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "nlinear", "dlinear"])
def test_linear_family_with_q_uses_the_basis(name: str) -> None:
    L, H, N = 24, 12, 3
    values = _series(300, N)
    ctx = ModelContext(seq_len=L, horizon=H, n_vars=N, extras=orthotrans_extras(values, 200, L, H))
    torch.manual_seed(0)
    plain = create_model(name, build_config(name, {}), ctx)
    torch.manual_seed(0)
    ortho = create_model(name, build_config(name, {"orthotrans": True}), ctx)
    x = torch.randn(2, L, N)
    y = ortho(x)
    assert y.shape == (2, H, N) and not torch.allclose(plain(x), y, atol=1e-4)
    with pytest.raises(ValueError, match="orthotrans=True needs"):
        create_model(name, build_config(name, {"orthotrans": True}), ModelContext(seq_len=L, horizon=H, n_vars=N))


def test_itransformer_orthotrans_and_normlin_plugins() -> None:
    """iTransformer embeds the lookback in the Q basis with orthotrans=True, and mixes with NormLin."""
    from forecast.models import ModelContext, build_config, create_model

    torch.manual_seed(0)
    L, H, N, C = 16, 8, 3, 2
    q_in = torch.linalg.qr(torch.randn(L, L))[0]
    ctx = ModelContext(L, H, N, C, {"q_in": q_in, "q_out": torch.eye(H)})
    small = {"d_model": 8, "d_ff": 8, "n_heads": 2, "dropout": 0.0}
    plain = create_model("itransformer", build_config("itransformer", small), ctx).eval()
    torch.manual_seed(0)
    ortho = create_model("itransformer", build_config("itransformer", {**small, "orthotrans": True}), ctx).eval()
    ortho.load_state_dict(plain.state_dict(), strict=False)
    x, xm = torch.randn(2, L, N), torch.rand(2, L, C) - 0.5
    assert not torch.allclose(plain(x, xm), ortho(x, xm))
    # Feeding the plain model the transformed, RevIN-normalized input gives the same output.
    z, stats = plain.revin.normalize(x)
    zt = (z.transpose(1, 2) @ q_in.T).transpose(1, 2)
    expected = plain.revin.denormalize(plain.backbone(zt, xm), stats)
    torch.testing.assert_close(ortho(x, xm), expected)
    nl = create_model("itransformer", build_config("itransformer", {**small, "attention": "normlin"}), ctx)
    assert nl(x, xm).shape == (2, H, N)
    with pytest.raises(ValueError, match="built for N=5"):
        nl(torch.randn(2, L, N + 1), xm)
