"""The shape contract and gradient flow of every registered model, with tiny sizes."""

import pytest
import torch

from forecast.models import ModelContext, build_config, create_model, model_names


def _ctx(L: int, H: int, N: int, C: int) -> ModelContext:
    extras = {"q_in": torch.linalg.qr(torch.randn(L, L))[0], "q_out": torch.linalg.qr(torch.randn(H, H))[0],
              "season": torch.tensor(5)}
    return ModelContext(seq_len=L, horizon=H, n_vars=N, n_marks=C, extras=extras)


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("with_marks", [True, False])
def test_shape_contract_and_gradients(name: str, with_marks: bool) -> None:
    torch.manual_seed(0)
    L, H, N, C, B = 32, 8, 3, 4, 2
    model = create_model(name, build_config(name, {}), _ctx(L, H, N, C if with_marks else 0))
    x = torch.randn(B, L, N)
    x_mark = torch.rand(B, L, C) - 0.5 if with_marks else None
    y_mark = torch.rand(B, H, C) - 0.5 if with_marks else None
    y = model(x, x_mark, y_mark)
    assert y.shape == (B, H, N)
    assert torch.isfinite(y).all()
    if not any(True for _ in model.parameters()):  # a baseline (naive, seasonal_naive): nothing to learn
        assert name in ("naive", "seasonal_naive")
        return
    y.pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", model_names())
def test_unknown_model_key_is_an_error(name: str) -> None:
    from forecast.errors import ForecastError

    with pytest.raises(ForecastError, match="unknown config key 'model.no_such_key'"):
        build_config(name, {"no_such_key": 1})


def test_the_baselines_repeat_the_last_value_and_the_last_season() -> None:
    L, H, N = 12, 7, 2
    x = torch.arange(L * N, dtype=torch.float32).reshape(1, L, N)
    naive = create_model("naive", build_config("naive", {}), _ctx(L, H, N, 0))
    assert torch.equal(naive(x), x[:, -1:, :].expand(1, H, N))
    seasonal = create_model("seasonal_naive", build_config("seasonal_naive", {}), _ctx(L, H, N, 0))  # season 5
    want = x[:, [7, 8, 9, 10, 11, 7, 8], :]
    assert torch.equal(seasonal(x), want)
    fixed = create_model("seasonal_naive", build_config("seasonal_naive", {"season": 3}), _ctx(L, H, N, 0))
    assert torch.equal(fixed(x), x[:, [9, 10, 11, 9, 10, 11, 9], :])
    assert "season" in "".join(seasonal.state_dict())  # kept with the model, for predict


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_run_batch_feeds_a_model_at_its_own_precision_and_returns_at_least_fp32(dtype: torch.dtype) -> None:
    """A model trained at a "-true" precision (weights bf16, fp16 or fp64) gets the windows' fp32 tensors outside
    Lightning (calibration, the forecast plot): at its :func:`placement` they are cast to its dtype, and the forecast
    comes back fp32 (fp64 stays fp64). Without a placement, as in a Lightning step, the call is the plain one."""
    from forecast.models import placement, run_batch

    torch.manual_seed(0)
    L, H, N, C, B = 32, 8, 3, 4, 5
    model = create_model("itransformer", build_config("itransformer", {}), _ctx(L, H, N, C)).eval()
    batch = {"x": torch.randn(B, L, N), "x_mark": torch.rand(B, L, C) - 0.5, "y_mark": torch.rand(B, H, C) - 0.5}
    with torch.no_grad():
        plain = model(batch["x"], batch["x_mark"], batch["y_mark"])
        assert placement(model) == (torch.device("cpu"), torch.float32)
        assert torch.equal(run_batch(model, batch), plain)
        assert torch.equal(run_batch(model, batch, *placement(model)), plain)
        model = model.to(dtype)
        assert placement(model) == (torch.device("cpu"), dtype)
        got = run_batch(model, batch, *placement(model))
        want = model(*(batch[k].to(dtype) for k in ("x", "x_mark", "y_mark")))
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.equal(got, want.to(got.dtype))
