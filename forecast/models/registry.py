"""The model registry: one name -> (nn.Module class, config dataclass).

Every forecaster is a plain ``nn.Module`` with the contract::

    forward(x [B, L, N], x_mark [B, L, C] | None, y_mark [B, H, C] | None = None,
            future [B, L+H, F] | None = None) -> [B, H, N_t]

``x`` is the standardized lookback of the targets (its first ``N_t = ctx.n_targets`` columns) and the past
covariates (the rest), ``x_mark`` its time features (timeF, in [-0.5, 0.5]), ``y_mark`` the known calendar features
of the horizon, and ``future`` the future covariates over lookback and horizon (:mod:`forecast.data.roles`). The
forecast is of the targets alone. Without covariates ``N_t = N`` and ``future`` is None: the papers' setting.
Each model file says how it reads covariates; none may read a target or a past covariate past the origin.
Models are built by :func:`create_model` from their config dataclass and a :class:`ModelContext`
whose sizes come from the data, never from the user.

A model that needs tensors computed from the training data (OLinear's OrthoTrans bases) declares their names
with ``register(..., extras=...)``: the data layer computes them from the train split
(:mod:`forecast.data.orthobasis`), the model keeps them as persistent buffers, and a saved model gets them back
from its own state dict (:func:`extras_from_state`), so they are stored once, with the weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from forecast.errors import ForecastError, check_values, unknown_key
from forecast.layers.quantile import QuantileForecaster
from forecast.layers.revin import REVIN_MODES, Forecaster


@dataclass(frozen=True)
class ModelContext:
    """What a model may know about the data: sizes, plus data-derived matrices (e.g. OrthoTrans Q)."""

    seq_len: int  # L
    horizon: int  # H
    n_vars: int  # N
    n_marks: int = 0  # C, time-feature channels (0 when the data has none)
    # Data-derived tensors computed from the train split, e.g. {"q_in": [L, L], "q_out": [H, H]}.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    n_targets: int | None = None  # N_t, the first N_t variates are forecast; None: all N (no past covariates)
    n_future: int = 0  # F, future-covariate channels
    univariate: bool = False  # S: the backbone forecasts one target at a time from its own history (N = N_t = 1)

    def __post_init__(self) -> None:
        if self.n_targets is None:
            object.__setattr__(self, "n_targets", self.n_vars)
        if not 1 <= self.n_targets <= self.n_vars:
            raise ValueError(f"n_targets must be in 1..n_vars={self.n_vars}, got {self.n_targets}")
        if self.univariate and (self.n_targets != self.n_vars or self.n_future):
            raise ValueError("a univariate (S) context has targets alone: no past or future covariates")

    @property
    def n_past(self) -> int:
        return self.n_vars - self.n_targets


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[nn.Module]
    config_cls: type
    description: str = ""
    preset: dict[str, Any] = field(default_factory=dict)  # fixed config values for aliases
    alias_of: str | None = None
    extras: Callable[[Any], tuple[str, ...]] = lambda cfg: ()  # names of the data-derived tensors cfg needs


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, config: type, description: str = "",
             extras: Callable[[Any], tuple[str, ...]] | None = None) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register("dlinear", DLinearConfig)``.

    ``extras(cfg)`` names the data-derived tensors (``ModelContext.extras``) the model needs for that config,
    e.g. ``("q_in", "q_out")``; by default none.
    """

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, cls, config, description or (cls.__doc__ or "").strip().split("\n")[0],
                                    extras=extras or ModelSpec.extras)
        return cls

    return deco


def register_alias(name: str, target: str, description: str = "", **preset: Any) -> None:
    """Register ``name`` as ``target`` with some config fields fixed (e.g. iflowformer = itransformer, flow)."""
    base = _REGISTRY[target]
    _REGISTRY[name] = ModelSpec(name, base.cls, base.config_cls, description, dict(preset), alias_of=target,
                                extras=base.extras)


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    key = name.lower()
    if key not in _REGISTRY:
        raise unknown_key("model", name, _REGISTRY, f"Known models: {', '.join(model_names())} (see `forecast "
                          "models`).")
    return _REGISTRY[key]


def build_config(name: str, params: dict[str, Any] | None = None) -> Any:
    """The model's config dataclass from ``params``; unknown keys are a ForecastError."""
    spec = get_spec(name)
    params = dict(params or {})
    allowed = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise unknown_key("config key", unknown[0], allowed, f"Valid model keys: {', '.join(sorted(allowed))}.",
                          prefix="model.", where=f" for model '{spec.name}'")
    check_values(spec.config_cls, params, "model")
    # RevIN is applied by create_model for every model that has the key, so it is checked here, for all of them.
    if "revin" in params and params["revin"] not in REVIN_MODES:
        raise ForecastError(f"model.revin must be one of {', '.join(REVIN_MODES)}, got {params['revin']!r}.")
    fixed = next((k for k, v in spec.preset.items() if k in params and params[k] != v), None)
    if fixed is not None:  # an alias is its target with these values: another value is the target's business
        raise ForecastError(f"model.{fixed} is {spec.preset[fixed]!r} for '{spec.name}', got {params[fixed]!r}; use "
                            f"-m {spec.alias_of} --set model.{fixed}={params[fixed]} for another.")
    params.update(spec.preset)
    try:
        return spec.config_cls(**params)
    except (TypeError, ValueError) as err:
        raise ForecastError(f"invalid model config for '{spec.name}': {err}") from None


def create_model(name: str, cfg: Any, ctx: ModelContext, quantiles: tuple[float, ...] = ()) -> nn.Module:
    """The only constructor of forecasters. ``cfg`` is the model's config dataclass.

    Returns a :class:`forecast.layers.revin.Forecaster`: the backbone, wrapped in RevIN when
    ``cfg.revin`` is ``plain`` or ``affine``. State-dict keys are ``backbone.*`` and ``revin.*``. With
    ``quantiles`` (train.loss=quantile), that forecaster is the median of a
    :class:`forecast.layers.quantile.QuantileForecaster` (``[B, H, N, Q]``; keys ``point.*``, ``spread.*``).
    """
    spec = get_spec(name)
    if not isinstance(cfg, spec.config_cls):
        raise TypeError(f"{name} expects a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    inner = dataclasses.replace(ctx, n_vars=1, n_targets=1) if ctx.univariate else ctx
    point = Forecaster(spec.cls(cfg, inner), inner.n_vars, getattr(cfg, "revin", "none"), fold=ctx.univariate)
    return QuantileForecaster(point, ctx.seq_len, ctx.horizon, quantiles) if quantiles else point


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where ``model`` holds its weights and at which float precision (fp16, bf16 or fp64 after a "-true" precision;
    the CPU and fp32 for a model that holds none): what :func:`run_batch` moves a batch to outside Lightning."""
    held = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    return (held.device, held.dtype) if held is not None else (torch.device("cpu"), torch.float32)


def run_batch(model: nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``model``'s forecast of a WindowDataset batch (``x``, and ``x_mark``, ``y_mark``, ``future`` when present),
    its tensors moved to ``device`` and cast to ``dtype`` first when given (outside Lightning, which does both for a
    step: :func:`placement`): the one place a batch becomes the forward's arguments. With ``dtype``, a forecast
    made in fp16 or bf16 comes back fp32."""
    args = [batch.get(k) for k in ("x", "x_mark", "y_mark", "future")]
    if device is not None or dtype is not None:
        args = [None if a is None else a.to(device=device, dtype=dtype if a.is_floating_point() else None)
                for a in args]
    out = model(*args)
    return at_least_fp32(out) if dtype is not None else out


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 if it is fp16 or bf16, else as it is: what a 16-bit forecast is scored and returned in."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def extras_from_state(names: tuple[str, ...], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The data-derived tensors ``names`` back from a saved model's state dict (the buffers ``*.<name>``), so a
    saved model is rebuilt without the data that produced them."""
    found = {key.rsplit(".", 1)[-1]: value for key, value in state.items() if key.rsplit(".", 1)[-1] in names}
    return {name: found[name].detach().clone() for name in names if name in found}
