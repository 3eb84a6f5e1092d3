"""Every model's configs/ defaults resolve, for every catalogued benchmark and its four paper horizons."""

from __future__ import annotations

import pytest

from forecast.data.catalogue import CATALOGUE
from forecast.errors import ForecastError
from forecast.models import get_spec, model_names
from forecast.resolve import resolve



@pytest.mark.parametrize("dataset", sorted(CATALOGUE))
@pytest.mark.parametrize("name", model_names())
def test_every_model_resolves_for_every_dataset_and_horizon(name: str, dataset: str) -> None:
    for horizon in CATALOGUE[dataset].horizons:
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


@pytest.mark.parametrize("name", model_names())
def test_a_run_without_a_horizon_gets_its_datasets_first_paper_horizon(name: str, tmp_path) -> None:
    """ILI's papers forecast 24, 36, 48 and 60 weeks; H=96 would leave its validation split two windows (and
    unbounded conformal intervals). The other benchmarks and a user's file default to 96; a flag wins."""
    from forecast.benchmark.grid import BenchmarkOptions, plan

    assert CATALOGUE["ILI"].horizons == (24, 36, 48, 60)
    assert resolve(name, "ILI").data.horizon == 24 and resolve(name, "ili").data.horizon == 24
    assert resolve(name, "ETTh1").data.horizon == 96 and resolve(name, str(tmp_path / "ili.csv")).data.horizon == 96
    assert resolve(name, "ILI", {"data.horizon": 60}).data.horizon == 60
    cells = plan(BenchmarkOptions([name], ["ILI", "Weather"]))  # no --horizons: each dataset's own first
    assert [(c.dataset, c.horizon) for c in cells] == [("ILI", 24), ("Weather", 96)]


def test_a_grid_of_all_models_and_all_datasets() -> None:
    """``--models all`` is every trained model (the baselines join with --baselines), ``--datasets all`` every
    benchmark, each at its own default horizon."""
    from forecast.benchmark.grid import BenchmarkOptions, plan
    from forecast.models import BASELINES

    cells = plan(BenchmarkOptions(["All"], ["all"]))
    assert {c.model for c in cells} == set(model_names()) - set(BASELINES)
    assert {(c.dataset, c.horizon) for c in cells} == {(d, CATALOGUE[d].horizons[0]) for d in CATALOGUE}
    assert len(cells) == len({c.model for c in cells}) * len(CATALOGUE)
