"""Every model's configs/ defaults resolve, for every catalogued benchmark and the four paper horizons."""

from __future__ import annotations

import pytest

from forecast.data.catalogue import CATALOGUE
from forecast.errors import ForecastError
from forecast.models import get_spec, model_names
from forecast.resolve import resolve

HORIZONS = (96, 192, 336, 720)


@pytest.mark.parametrize("dataset", sorted(CATALOGUE))
@pytest.mark.parametrize("name", model_names())
def test_every_model_resolves_for_every_dataset_and_horizon(name: str, dataset: str) -> None:
    for horizon in HORIZONS:
        cfg = resolve(name, dataset, {"data.horizon": horizon})
        assert (cfg.model_name, cfg.data.dataset, cfg.data.horizon) == (get_spec(name).name, dataset, horizon)
        assert cfg.data.seq_len >= 1 and cfg.train.epochs >= 1
        assert isinstance(cfg.model, get_spec(name).config_cls)


@pytest.mark.parametrize("name", model_names())
def test_a_bad_revin_is_one_line_for_every_model(name: str) -> None:
    """model.revin is applied by the registry for every model, so it is checked there for every model."""
    fields = get_spec(name).config_cls.__dataclass_fields__
    if "revin" not in fields:
        pytest.skip(f"{name} has no revin key")
    with pytest.raises(ForecastError, match=r"^model.revin must be one of none, plain, affine, got 'bogus'.$"):
        resolve(name, "ETTh1", {"model.revin": "bogus"})
