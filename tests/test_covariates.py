"""Targets and covariates for every registered model: the shape contract, no look at a target's future, and the
covariates really read (forecast.data.roles, forecast.layers.covariates)."""

import dataclasses

import pytest
import torch

from forecast.data.windows import WindowDataset
from forecast.models import ModelContext, build_config, create_model, model_names, run_batch

L, H, T = 24, 6, 80
N_T, N_P, N_F, C = 2, 2, 3, 4  # targets, past covariates, future covariates, calendar marks


def _ctx(**kw) -> ModelContext:
    extras = {"q_in": torch.linalg.qr(torch.randn(L, L))[0], "q_out": torch.linalg.qr(torch.randn(H, H))[0],
              "season": torch.tensor(5)}
    base = dict(seq_len=L, horizon=H, n_vars=N_T + N_P, n_marks=C, n_targets=N_T, n_future=N_F, extras=extras)
    return ModelContext(**{**base, **kw})


def _model(name: str, ctx: ModelContext, quantiles: tuple = ()) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, build_config(name, {}), ctx, quantiles)
    for p in model.parameters():  # the covariate maps start at zero: give them weights, so reading shows
        torch.nn.init.normal_(p, std=0.1) if p.dim() > 1 and not p.abs().sum() else None
    return model.eval()


def _series(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, N_T + N_P, generator=g), torch.rand(T, C, generator=g) - 0.5, torch.randn(T, N_F, generator=g)


def _forecast(model, values, marks, future, idx) -> torch.Tensor:  # noqa: ANN001
    ds = WindowDataset(values, marks, 0, T, L, H, N_T, future)
    with torch.no_grad():
        return run_batch(model, ds[idx])


@pytest.mark.parametrize("name", model_names())
def test_shape_contract_with_covariates_and_gradients(name: str) -> None:
    model = _model(name, _ctx()).train()
    values, marks, future = _series()
    batch = WindowDataset(values, marks, 0, T, L, H, N_T, future)[[0, 5, 9]]
    assert batch["x"].shape == (3, L, N_T + N_P) and batch["y"].shape == (3, H, N_T)
    assert batch["future"].shape == (3, L + H, N_F)
    out = run_batch(model, batch)
    assert out.shape == (3, H, N_T) and torch.isfinite(out).all()
    if any(True for _ in model.parameters()):
        out.pow(2).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"parameters without gradient: {missing}"
    quantile = _model(name, _ctx(), (0.1, 0.5, 0.9))
    assert run_batch(quantile, batch).shape == (3, H, N_T, 3)


@pytest.mark.parametrize("name", model_names())
def test_a_targets_future_never_reaches_the_forecast(name: str) -> None:
    """Shift everything a model must not see (the targets' and the past covariates' values after the origin) and
    the forecast stays bit for bit; the future covariates over the horizon and the past covariates before the
    origin are read (except by the baselines, which repeat each target's own history)."""
    model = _model(name, _ctx())
    values, marks, future = _series()
    idx = [3, 20, 40]
    base = _forecast(model, values, marks, future, idx)
    for i in idx:  # a copy per window: rows from its origin on are changed, nothing before
        shifted = values.clone()
        shifted[i + L:] += 100.0
        assert torch.equal(_forecast(model, shifted, marks, future, [i]), _forecast(model, values, marks, future, [i])
                           ), f"{name} read a value after the origin"
    if name in ("naive", "seasonal_naive"):
        return
    moved = future.clone()
    moved[idx[0] + L: idx[0] + L + H] += 1.0  # the future covariates over the first window's horizon
    assert not torch.allclose(_forecast(model, values, marks, moved, idx[:1]), base[:1]), f"{name} ignores them"
    past = values.clone()
    past[idx[0]: idx[0] + L, N_T:] = torch.randn(L, N_P)  # the past covariates over the lookback (a new shape:
    # RevIN would take a mere shift away)
    assert not torch.allclose(_forecast(model, past, marks, future, idx[:1]), base[:1]), f"{name} ignores them"


@pytest.mark.parametrize("name", model_names())
def test_univariate_s_forecasts_each_target_from_its_own_history(name: str) -> None:
    ctx = _ctx(n_vars=N_T, n_future=0, univariate=True)
    model = _model(name, ctx)
    x = torch.randn(4, L, N_T)
    m = torch.rand(4, L, C) - 0.5, torch.rand(4, H, C) - 0.5
    with torch.no_grad():
        out = model(x, *m)
        assert out.shape == (4, H, N_T)
        other = x.clone()
        other[..., 1] = torch.randn(4, L)  # another history for target 1 leaves target 0's forecast alone
        assert torch.equal(model(other, *m)[..., 0], out[..., 0])
        alone = model(x[..., :1], *m)  # one target: the same network
        assert torch.allclose(alone[..., 0], out[..., 0], atol=1e-6)


def test_without_covariates_the_papers_models_are_unchanged() -> None:
    """M without covariates builds the same state dict as before covariates existed (no new parameters)."""
    plain = ModelContext(seq_len=L, horizon=H, n_vars=3, n_marks=C, extras=_ctx().extras)
    for name in model_names():
        keys = set(create_model(name, build_config(name, {}), plain).state_dict())
        assert not any("covariates" in k or "future_embed" in k for k in keys), name
    assert dataclasses.replace(plain).n_targets == 3


def _optimizer(ctx: ModelContext, **train):  # noqa: ANN202
    import numpy as np

    from forecast.config import TrainConfig
    from forecast.train.module import ForecastModule

    module = ForecastModule(create_model("dlinear", build_config("dlinear", {}), ctx), TrainConfig(**train),
                            np.zeros(ctx.n_targets), np.ones(ctx.n_targets))
    return module, module.configure_optimizers()


def test_the_covariate_map_learns_at_its_own_lr_and_follows_the_schedule() -> None:
    module, conf = _optimizer(_ctx(), lr=5e-3, covariate_lr=2e-5)
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    cov = {id(p) for p in module.model.backbone.covariates.parameters()}
    assert [g["lr"] for g in opt.param_groups] == [5e-3, 2e-5]
    assert {id(p) for p in opt.param_groups[1]["params"]} == cov
    assert not cov & {id(p) for p in opt.param_groups[0]["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(module.parameters()))
    sched.step(), sched.step()  # type1: epoch 2 halves both
    assert [g["lr"] for g in opt.param_groups] == [2.5e-3, 1e-5]


def test_without_covariates_one_group_in_parameter_order() -> None:
    plain = ModelContext(seq_len=L, horizon=H, n_vars=3, n_marks=C, extras=_ctx().extras)
    module, conf = _optimizer(plain, lr=5e-3)
    (group,) = conf["optimizer"].param_groups
    assert group["lr"] == 5e-3 and [id(p) for p in group["params"]] == [id(p) for p in module.parameters()]


@pytest.mark.parametrize(("sets", "searched"), [({}, False), ({"data.features": "S"}, False),
                                                ({"data.features": "MS", "data.target": "OT"}, True)])
def test_tune_searches_the_covariate_lr_only_with_covariates(sets: dict, searched: bool) -> None:
    from forecast.resolve import resolve
    from forecast.tuning.space import tune_space

    space, _ = tune_space(resolve("dlinear", "ETTh1", sets), {})
    assert ("train.covariate_lr" in space) is searched and "train.lr" in space
