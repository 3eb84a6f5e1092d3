"""What each column is for (forecast.data.roles): M, S and MS, past and future covariates, the model's column order,
windows whose targets are the targets alone, and each mistake one line with exit code 2."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.config import DataConfig
from forecast.data.datamodule import ForecastDataModule
from forecast.data.roles import resolve_roles
from forecast.errors import ForecastError
from tests.conftest import ETTH1_COLUMNS
from tests.helpers import run_cli


def _roles(**kw):  # noqa: ANN202
    return resolve_roles(DataConfig(**kw), ETTH1_COLUMNS, "ETTh1")


def test_the_settings_pick_the_papers_columns() -> None:
    m = _roles()
    assert m.features == "M" and m.targets == tuple(ETTH1_COLUMNS) and m.is_default
    s = _roles(features="S")
    assert s.targets == ("OT",) and s.univariate and not s.past  # the papers' univariate OT
    ms = _roles(features="MS")
    assert ms.targets == ("OT",) and ms.past == tuple(ETTH1_COLUMNS[:-1]) and ms.n_inputs == 7
    # a target or a covariate named without --features means MS
    assert _roles(target="HUFL").features == "MS" and _roles(target="HUFL").past[-1] == "OT"
    named = _roles(target="OT", past_covariates="HUFL,HULL", future_covariates="LULL,calendar")
    assert named.columns == ["OT", "HUFL", "HULL", "LULL"] and named.calendar and named.ignored == ("MUFL", "MULL",
                                                                                                      "LUFL")
    assert _roles(features="M", future_covariates="calendar").targets == tuple(ETTH1_COLUMNS)


@pytest.mark.parametrize("kw, message", [
    ({"target": "XX"}, "--target names 'XX', which ETTh1 does not have; its columns: HUFL"),
    ({"features": "M", "target": "OT"}, "with --features M every column is a target"),
    ({"features": "S", "past_covariates": "HUFL"}, "--features S forecasts each target from its own history alone"),
    ({"target": "OT", "past_covariates": "OT"}, "column 'OT' is in both --target and --past-covariates"),
    ({"future_covariates": "rain"}, "(or calendar, the time features)"),
    ({"features": "MS", "past_covariates": ",".join(ETTH1_COLUMNS)}, "nothing is left to forecast"),
])
def test_a_role_mistake_is_one_line(kw: dict, message: str) -> None:
    with pytest.raises(ForecastError, match=None) as err:
        _roles(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_values_are_checked_once() -> None:
    with pytest.raises(ForecastError, match="data.features must be one of M, S, MS"):
        DataConfig(features="X")
    with pytest.raises(ForecastError, match="names column 'OT' twice"):
        DataConfig(target="OT,OT")
    assert DataConfig(target=["OT", "HUFL"]).target == ("OT", "HUFL") and DataConfig(features="ms").features == "MS"
    # what tables put beside the dataset: an S or MS result never shares the M row (or its published number)
    assert DataConfig().setting == "" and DataConfig(features="S", target="OT").setting == "S OT"
    assert DataConfig(target="OT", future_covariates="calendar").setting == "MS OT + covariates"


def test_ms_windows_forecast_the_targets_from_covariates_on_the_papers_split() -> None:
    m = ForecastDataModule(DataConfig(seq_len=96, horizon=24))
    ms = ForecastDataModule(DataConfig(seq_len=96, horizon=24, target="OT", future_covariates="LULL,calendar"),
                            series=None)
    for split in ("train", "val", "test"):  # the same borders and every window, whatever the roles
        assert len(ms.dataset(split)) == len(m.dataset(split))
    s = ms.series
    assert s.columns == ["OT", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL"] and s.n_targets == 1
    assert s.marks is None and s.calendar.shape[1] == 4 and s.n_future == 5  # the calendar moved to the covariates
    batch = ms.dataset("test")[[0, 1]]
    assert batch["x"].shape == (2, 96, 6) and batch["y"].shape == (2, 24, 1) and batch["future"].shape == (2, 120, 5)
    ot = m.series.columns.index("OT")
    np.testing.assert_array_equal(batch["y"][..., 0].numpy(), m.dataset("test")[[0, 1]]["y"][..., ot].numpy())
    np.testing.assert_allclose(s.mean[0], m.series.mean[ot])  # the scaler is the train split's, per column
    assert s.mase_scale().shape == (1,)


def test_a_role_mistake_on_the_command_line_exits_2(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "-d", "ETTh1", "--target", "oil", "--epochs", "1", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--target names 'oil', which ETTh1 does not have" in err
    code, _, err = run_cli(["train", "-d", "ETTh1", "--features", "X", "-q"], capsys)
    assert code == 2 and "data.features must be one of M, S, MS" in err


def test_an_s_run_gets_its_own_leaderboard_row() -> None:
    """The dashboard groups runs by (dataset, H, model) and picks the lowest val loss: an S run (one target, a lower
    loss) must not take the multivariate row, nor be set beside its published number."""
    from types import SimpleNamespace

    from forecast.dashboard.collect import select, to_record

    def run(run_id: str, setting: str, val: float) -> SimpleNamespace:
        params = {"model.name": "dlinear", "data.dataset": "ETTh1", "data.horizon": "96", "data.seq_len": "336",
                  "train.seed": "2021", **({"data.setting": setting} if setting else {})}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, experiment_id="1", run_name=run_id, start_time=1),
                               data=SimpleNamespace(params=params, tags={}, metrics={"test_mse": val, "test_mae": val,
                                                                                    "best_val_loss": val}))

    cells = select([to_record(run("m", "", 0.7)), to_record(run("s", "S OT", 0.05))])
    assert {k: [r.run_id for r in v] for k, v in cells.items()} == {("ETTh1", 96, "dlinear"): ["m"],
                                                                    ("ETTh1 [S OT]", 96, "dlinear"): ["s"]}
