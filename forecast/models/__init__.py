"""Forecasters. Each module registers its models; this file imports them explicitly (no directory scan)."""

from forecast.models import linear  # noqa: F401  Linear, NLinear, DLinear
from forecast.models import itransformer  # noqa: F401  iTransformer, iFlowformer
from forecast.models import flowformer  # noqa: F401  Flowformer (vanilla encoder-decoder)
from forecast.models import olinear  # noqa: F401  OLinear
from forecast.models import smamba  # noqa: F401  S-Mamba
from forecast.models import naive  # noqa: F401  naive, seasonal_naive (baselines)
from forecast.models.naive import BASELINES  # noqa: F401
from forecast.models.registry import (  # noqa: F401
    ModelContext,
    at_least_fp32,
    build_config,
    create_model,
    extras_from_state,
    get_spec,
    model_names,
    placement,
    run_batch,
)
