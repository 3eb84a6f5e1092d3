"""Quantile training for every model: the pinball loss, quantiles that never cross, the median as the point
forecast, and the train -> predict -> pyfunc round trip with quantile columns, parametrized over every model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from forecast.errors import ForecastError
from forecast.layers.quantile import QuantileForecaster, pinball
from forecast.models import ModelContext, build_config, create_model, model_names
from tests.helpers import run_cli


def test_pinball_loss_by_hand() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0]])  # one value, quantiles 0.1, 0.5, 0.9
    y = torch.tensor([2.5])
    q = torch.tensor([0.1, 0.5, 0.9])
    by_hand = np.mean([0.1 * 1.5, 0.5 * 0.5, (0.9 - 1) * (2.5 - 3.0)])
    assert float(pinball(pred, y, q)) == pytest.approx(by_hand)


def test_pinball_value_and_gradient_are_those_of_the_max_form() -> None:
    gen = torch.Generator().manual_seed(5)
    pred = torch.randn(4, 6, 3, 5, generator=gen, requires_grad=True)
    y = torch.randn(4, 6, 3, generator=gen)
    q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
    loss = pinball(pred, y, q)
    loss.backward()
    ref_pred = pred.detach().clone().requires_grad_()
    err = y.unsqueeze(-1) - ref_pred
    ref = torch.maximum(q * err, (q - 1) * err).mean()
    ref.backward()
    assert torch.equal(loss, ref)  # the same products in the same order: bit-equal
    assert torch.equal(pred.grad, ref_pred.grad)
    by_hand = -(q - (err.detach() < 0).float()) / err.numel()
    assert torch.allclose(pred.grad, by_hand)


def test_the_outer_levels_train_the_spreads_and_the_median_trains_the_model() -> None:
    """An outer level's loss reaches the spread head alone; the median's reaches the model alone, so the point
    forecast is learned by median regression, never pulled toward the tails."""
    torch.manual_seed(0)
    ctx = ModelContext(seq_len=24, horizon=6, n_vars=3, n_marks=0)
    model = create_model("dlinear", build_config("dlinear", {}), ctx, (0.1, 0.5, 0.9))
    out = model(torch.randn(4, 24, 3))
    grads = {}
    for level in (0, 1, 2):
        model.zero_grad(set_to_none=True)
        out[..., level].sum().backward(retain_graph=True)
        grads[level] = ({n for n, p in model.point.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0},
                        model.spread.weight.grad is not None and bool(model.spread.weight.grad.abs().sum() > 0))
    assert grads[1][0] and not grads[1][1]  # the median: the model's weights, not the head's
    for level in (0, 2):
        assert grads[level] == (set(), True)  # an outer level: the head's weights, not the model's


@pytest.mark.parametrize("name", model_names())
def test_quantiles_never_cross_and_the_median_is_the_point_model(name: str) -> None:
    torch.manual_seed(0)
    L, H, N = 32, 8, 3
    extras = {"q_in": torch.linalg.qr(torch.randn(L, L))[0], "q_out": torch.linalg.qr(torch.randn(H, H))[0],
              "season": torch.tensor(5)}
    ctx = ModelContext(seq_len=L, horizon=H, n_vars=N, n_marks=4, extras=extras)
    levels = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    model = create_model(name, build_config(name, {}), ctx, levels).eval()  # no dropout: compare exactly
    assert isinstance(model, QuantileForecaster)
    with torch.no_grad():
        model.spread.weight.normal_(0, 3)  # any weights: the order holds by construction
        x, marks = torch.randn(4, L, N), torch.rand(4, L, 4) - 0.5
        out = model(x, marks, torch.rand(4, H, 4) - 0.5)
        assert out.shape == (4, H, N, len(levels))
        assert (out[..., 1:] >= out[..., :-1]).all()  # never crossing (equal only where a gap underflows)
        point = model.point(x, marks, torch.rand(4, H, 4) - 0.5) if name == "flowformer" else model.point(x, marks)
        if name != "flowformer":  # flowformer's decoder reads the future marks, drawn afresh above
            assert torch.equal(out[..., 3], point)


def test_bad_quantile_configs_are_one_line() -> None:
    from forecast.config import TrainConfig

    assert TrainConfig(loss="quantile", quantiles=[0.1, 0.5, 0.9]).model_quantiles == (0.1, 0.5, 0.9)
    assert TrainConfig().model_quantiles == ()
    for bad in ([0.1, 0.9], [0.9, 0.5, 0.1], [0.0, 0.5], "0.5"):
        with pytest.raises(ForecastError, match="train.quantiles must be increasing levels in .* include 0.5"):
            TrainConfig(loss="quantile", quantiles=bad)


def test_a_bf16_true_quantile_model_answers_for_its_configured_levels(tmp_path: Path, monkeypatch, capsys) -> None:
    """A bf16-true run casts the model's buffers with its weights: the saved levels read 0.100098 and 0.898438.
    predict answers for the levels the run was configured with (0.1 and 0.9), and names them when asked for
    another."""
    from tests.test_artifact import _synthetic_csv

    monkeypatch.chdir(tmp_path)
    csv = _synthetic_csv(tmp_path / "toy.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli(["train", "-d", str(csv), "-m", "dlinear", "-L", "24", "-H", "6", "--epochs", "1",
                            "--precision", "bf16-true", "--set", "train.limit_train_batches=2", "--set",
                            "train.loss=quantile", "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    model_dir = next(tmp_path.rglob("MLmodel")).parent  # the run's logged model
    state = torch.load(next(model_dir.rglob("model_state.pt")), weights_only=True)
    assert state["quantiles"].dtype == torch.bfloat16 and state["quantiles"][0].item() != 0.1
    pd.read_csv(csv).tail(30).to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", str(model_dir), "-i", str(tmp_path / "history.csv"), "-o", str(out),
                            "--quantiles", "0.1,0.9", "-q"], capsys)
    assert code == 0, err
    assert {"OT_q0.1", "OT_q0.9"} <= set(pl.read_csv(out).columns)
    code, _, err = run_cli(["predict", "-m", str(model_dir), "-i", str(tmp_path / "history.csv"), "--quantiles",
                            "0.25", "-q"], capsys)
    assert code == 2 and "its quantile levels: 0.1, 0.5, 0.9." in err, err
    # The levels are the config's; one edited there disagrees with those saved with the weights: one line.
    config = next(model_dir.rglob("config.yaml"))
    config.write_text(config.read_text().replace("  - 0.1\n  - 0.5\n  - 0.9\n", "  - 0.2\n  - 0.5\n  - 0.8\n"))
    code, _, err = run_cli(["predict", "-m", str(model_dir), "-i", str(tmp_path / "history.csv"), "-o", str(out),
                            "-q"], capsys)
    assert code == 2 and "the config gives quantile levels 0.2, 0.5, 0.8 but the weights were trained for 0.1" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", model_names())
def test_every_model_trains_on_quantiles_and_predicts_them(name: str, tmp_path: Path, monkeypatch, capsys) -> None:
    import dataclasses

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from forecast import tracking
    from forecast.models import get_spec
    from tests.test_artifact import TINY, _synthetic_csv

    monkeypatch.chdir(tmp_path)
    L, H = 24, 6
    csv = _synthetic_csv(tmp_path / "toy.csv")
    fields = {f.name for f in dataclasses.fields(get_spec(name).config_cls)} - set(get_spec(name).preset)
    flags = [a for k, v in TINY.items() if k in fields for a in ("--set", f"model.{k}={v}")]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli(["train", "-d", str(csv), "-m", name, "-L", str(L), "-H", str(H), "--epochs", "1",
                            "--set", "train.limit_train_batches=2", "--set", "train.loss=quantile", "--set",
                            "train.quantiles=[0.1,0.5,0.9]", *flags, "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert "test_pinball" in run.data.metrics and "test_mse" in run.data.metrics
    history = pd.read_csv(csv).tail(L + 5)
    history.to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run.info.run_id}/model", "-i", str(tmp_path / "history.csv"),
                            "-o", str(out), "--quantiles", "0.1,0.9", "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    got = pl.read_csv(out)
    for col in ("load", "temp", "OT"):
        assert (got[f"{col}_q0.1"] < got[col]).all() and (got[col] < got[f"{col}_q0.9"]).all()
    with tracking.fluent_store(uri):
        served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(
            history, params={"quantiles": "0.1,0.9"})
    np.testing.assert_allclose(served["OT_q0.9"].to_numpy(), got["OT_q0.9"].to_numpy(), rtol=1e-6)
    code, _, err = run_cli(["predict", "-m", f"runs:/{run.info.run_id}/model", "-i", str(tmp_path / "history.csv"),
                            "--quantiles", "0.25", "--tracking-uri", uri, "-q"], capsys)
    assert code == 2 and "--quantiles 0.25 is not one the model has; its quantile levels: 0.1, 0.5, 0.9" in err
    code, _, err = run_cli(["predict", "-m", f"runs:/{run.info.run_id}/model", "-i", str(tmp_path / "history.csv"),
                            "--rolling", "--quantiles", "0.1", "--tracking-uri", uri, "-q"], capsys)
    assert code == 2 and "--quantiles is for the next forecast; --rolling scores the point forecast" in err


@pytest.mark.slow
def test_a_nine_level_quantile_models_test_crps_scores_its_own_quantiles(tmp_path: Path, capsys) -> None:
    """With ProbTS's nine levels, test_crps is the CRPS of the model's quantiles (what predict gives for a test
    window); the conformal intervals' one is test_crps_conformal. Three levels keep the conformal one."""
    from mlflow.tracking import MlflowClient

    from tests.test_artifact import _synthetic_csv

    L, H = 24, 6
    csv = _synthetic_csv(tmp_path / "toy.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nine = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]"
    for levels in (nine, "[0.1,0.5,0.9]"):
        code, _, err = run_cli(["train", "-d", str(csv), "-m", "dlinear", "-L", str(L), "-H", str(H), "--epochs", "2",
                                "--set", "train.loss=quantile", "--set", f"train.quantiles={levels}",
                                "--tracking-uri", uri, "-q"], capsys)
        assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("toy").experiment_id], order_by=["start_time ASC"])
    nine_m, three_m = (r.data.metrics for r in runs)
    assert {"test_crps", "test_crps_conformal", "test_crps_orig", "test_crps_conformal_orig"} <= set(nine_m)
    assert nine_m["test_crps"] != nine_m["test_crps_conformal"] and 0 < nine_m["test_crps"] < 2
    assert "test_crps_conformal" not in three_m and "test_crps" in three_m
    # --rolling over the test split scores every window as the test pass did, from the logged model alone
    from forecast.data.series import split_borders
    from forecast.inference.predict import run_predict

    frame = pd.read_csv(csv)
    start, end = split_borders("ratio", len(frame), L)["test"]
    frame.iloc[start:end].to_csv(tmp_path / "test_split.csv", index=False)
    for run, m in ((runs[0], nine_m), (runs[1], three_m)):
        got = run_predict(f"runs:/{run.info.run_id}/model", tmp_path / "test_split.csv", rolling=True,
                          tracking_uri=uri).rolling.metrics
        assert got["windows"] == m["test_windows"]
        for key in [k for k in ("crps", "crps_orig", "crps_conformal", "crps_conformal_orig") if f"test_{k}" in m]:
            assert got[key] == pytest.approx(m[f"test_{key}"], rel=1e-5), key
        assert ("crps_conformal" in got) == (run is runs[0])
    # predict gives the nine levels from the logged model alone, in order at every step and variate
    pd.read_csv(csv).tail(L).to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "fc.csv"
    levels = (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)
    code, _, err = run_cli(["predict", "-m", f"runs:/{runs[0].info.run_id}/model", "-i", str(tmp_path / "history.csv"),
                            "-o", str(out), "--quantiles", ",".join(map(str, levels)), "--tracking-uri", uri, "-q"],
                           capsys)
    assert code == 0, err
    got = pd.read_csv(out)
    for col in ("load", "temp", "OT"):
        lower, upper = ([got[f"{col}_q{lv}"] for lv in part] for part in (levels[:4], levels[4:]))
        fan = np.stack([*lower, got[col], *upper])  # q0.1 ... q0.4, the median, q0.6 ... q0.9
        assert (np.diff(fan, axis=0) > 0).all()
