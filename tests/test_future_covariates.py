"""Targets and covariates end to end: train with a past and a future covariate, then `forecast predict --future`,
the pyfunc's two frames and the scoring server's request give the LightningModule's own forecast of the last test
window; every mismatch of the future frame is one line and exit 2 with no output; --rolling reads covariates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from tests.helpers import run_cli, run_cli_io

L, H = 24, 8
ROLES = ["--target", "OT", "--past-covariates", "load", "--future-covariates", "temp,calendar"]
TINY = {"d_model": 16, "d_ff": 16, "e_layers": 1, "n_heads": 2, "d_layers": 1, "label_len": 8, "embed_size": 4,
        "d_state": 4}
pytestmark = pytest.mark.slow  # trains through the CLI


def _csv(path: Path, n: int = 480) -> Path:
    """OT follows temp, which is known ahead (a forecast), and load, observed only; plus an unused column."""
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(1)
    temp = 15 + 5 * np.sin(2 * np.pi * t / 24 + 1) + rng.standard_normal(n)
    load = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-03", periods=n, freq="h"), "load": load, "temp": temp,
                          "spare": rng.standard_normal(n), "OT": 2 * temp + 0.5 * load + 0.2 * rng.standard_normal(n)})
    frame.to_csv(path, index=False)
    return path


def _train(root: Path, name: str, cli) -> tuple[str, str]:  # noqa: ANN001 (argv -> (code, out, err))
    import dataclasses

    from mlflow.tracking import MlflowClient

    from forecast.models import get_spec

    fields = {f.name for f in dataclasses.fields(get_spec(name).config_cls)} - set(get_spec(name).preset)
    flags = [a for k, v in TINY.items() if k in fields for a in ("--set", f"model.{k}={v}")]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    code, _, err = cli(["train", "-d", str(root / "toy.csv"), "-m", name, "-L", str(L), "-H", str(H), "--epochs", "1",
                        "--set", "train.limit_train_batches=2", *ROLES, *flags, "--tracking-uri", uri, "-q"])
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("toy").experiment_id], filter_string=f"tags.model = '{name}'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    return run.info.run_id, uri


def _last_test_window(root: Path, name: str, run_id: str, uri: str) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """(the module's forecast of the last test window in original units, its history, its future frame)."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    from forecast.models import get_spec, run_batch
    from forecast.pipeline import build
    from forecast.resolve import resolve

    fields = {f.name for f in dataclasses.fields(get_spec(name).config_cls)} - set(get_spec(name).preset)
    sets = {f"model.{k}": v for k, v in TINY.items() if k in fields}
    cfg = resolve(name, str(root / "toy.csv"), {"data.seq_len": L, "data.horizon": H, "data.target": "OT",
                                                "data.past_covariates": "load",
                                                "data.future_covariates": "temp,calendar", **sets})
    dm, module = build(cfg, progress=False)
    state = torch.load(MlflowClient(tracking_uri=uri).download_artifacts(run_id, "model_state.pt", str(root)),
                       weights_only=True)
    module.model.load_state_dict(state)
    module.model.eval()
    ds = dm.dataset("test")
    w = len(ds) - 1
    with torch.no_grad():
        pred = module.point(run_batch(module.model, ds[[w]]))[0].double().numpy()
    s = dm.series
    assert s.columns == ["OT", "load", "temp"] and s.n_targets == 1 and s.n_future == 1 + 4  # temp + 4 hourly marks
    origin = dm.series.borders["test"][0] + w + L  # the first forecast row
    df = pd.read_csv(root / "toy.csv")
    return pred * s.std[0] + s.mean[0], df.iloc[origin - L - 3: origin], df.iloc[origin: origin + H][["date", "temp"]]


def _model_names() -> list[str]:
    from forecast.models import model_names

    return model_names()


@pytest.mark.parametrize("name", _model_names())
def test_every_model_round_trips_with_future_covariates(name: str, tmp_path: Path, monkeypatch, capsys,
                                                         recwarn) -> None:
    import mlflow.pyfunc

    from forecast import tracking

    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "toy.csv")
    run_id, uri = _train(tmp_path, name, lambda argv: run_cli(argv, capsys))
    assert not [str(w.message) for w in recwarn if "input example" in str(w.message)]  # no MLflow nag in the output
    want, history, future = _last_test_window(tmp_path, name, run_id, uri)
    history.to_csv(tmp_path / "history.csv", index=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run_id}/model", "-i", str(tmp_path / "history.csv"), "--future",
                            str(tmp_path / "future.csv"), "-o", str(out), "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    got = pl.read_csv(out)
    assert got.columns == ["date", "OT"] and got["date"].to_list() == future["date"].tolist()
    np.testing.assert_allclose(got["OT"].to_numpy(), want[:, 0], rtol=1e-5, atol=1e-5)
    with tracking.fluent_store(uri):
        pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    served = pyfunc.predict({"history": history, "future": future})
    np.testing.assert_allclose(served["OT"].to_numpy(), want[:, 0], rtol=1e-5, atol=1e-5)
    if name == "dlinear":  # the request shape of the README, through the scoring server and the guard
        _check_rest(pyfunc, history, future, want[:, 0])


def _check_rest(pyfunc, history: pd.DataFrame, future: pd.DataFrame, want: np.ndarray) -> None:  # noqa: ANN001
    from mlflow.pyfunc import scoring_server

    from forecast.inference.server import RequestGuard
    from tests.test_serve import call

    app = RequestGuard(scoring_server.init(pyfunc), L, 1 << 20)
    frame = lambda df: {"columns": list(df.columns), "data": df.values.tolist()}  # noqa: E731
    body = {"inputs": {"history": frame(history), "future": frame(future)}, "params": {"horizon": 4}}
    status, _, doc = call(app, json.dumps(body).encode())
    assert status == 200, doc
    np.testing.assert_allclose([row["OT"] for row in doc["predictions"]], want[:4], rtol=1e-5, atol=1e-5)
    body["inputs"]["future"] = frame(future.iloc[:-1])
    status, _, doc = call(app, json.dumps(body).encode())
    assert status == 400 and "future covariates must cover" in doc["message"] and "\n" not in doc["message"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cov")
    _csv(root / "toy.csv")
    run_id, uri = _train(root, "dlinear", run_cli_io)
    df = pd.read_csv(root / "toy.csv")
    df.iloc[:400].drop(columns="spare").to_csv(root / "history.csv", index=False)
    df.iloc[400:400 + H][["date", "temp"]].to_csv(root / "future.csv", index=False)
    return {"root": root, "model": f"runs:/{run_id}/model", "uri": uri, "df": df}


CASES = {
    "no future file": (None, "reads the future covariates temp over the horizon; give --future FILE with the 8 rows "
                             "from 2022-01-19 16:00 to 2022-01-19 23:00"),
    "a missing row": (lambda f: f.iloc[:-1], "future covariates must cover 2022-01-19 16:00 to 2022-01-19 23:00 ('h' "
                                              "steps, the H=8 after the history's last row 2022-01-19 15:00); "),
    "the wrong range": (lambda f: f.iloc[1:], "starts at 2022-01-19 17:00"),
    "an extra column": (lambda f: f.assign(price=1.0), "unexpected column 'price'"),
    "a missing column": (lambda f: f.drop(columns="temp"), "column 'temp' is missing"),
    "a NaN": (lambda f: f.assign(temp=[np.nan] + f["temp"].tolist()[1:]), "empty"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_future_frame_is_one_line_and_exit_2_with_no_output(case: str, trained: dict, capsys) -> None:
    root = trained["root"]
    change, message = CASES[case]
    args = []
    if change is not None:
        change(pd.read_csv(root / "future.csv")).to_csv(root / "bad.csv", index=False)
        args = ["--future", str(root / "bad.csv")]
    out = root / f"out-{case.replace(' ', '-')}.csv"
    code, _, err = run_cli(["predict", "-m", trained["model"], "-i", str(root / "history.csv"), *args, "-o", str(out),
                            "--tracking-uri", trained["uri"]], capsys)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(root.glob("*.tmp*"))


def test_rolling_reads_the_covariates_with_or_without_a_future_file(trained: dict, capsys) -> None:
    root = trained["root"]
    out = root / "rolling.csv"
    base = ["predict", "-m", trained["model"], "-i", str(root / "history.csv"), "--rolling", "-o", str(out),
            "--tracking-uri", trained["uri"], "-q"]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    inside = pl.read_csv(out)
    assert inside["origin"].n_unique() == 400 - L - H + 1  # only windows whose horizon lies in the input
    code, _, err = run_cli([*base, "--future", str(root / "future.csv")], capsys)
    assert code == 0, err
    ahead = pl.read_csv(out)
    assert ahead["origin"].n_unique() == 400 - L + 1 and ahead.columns == ["origin", "date", "step", "OT"]
    # the windows both forecast agree; the last one is the next forecast of `forecast predict --future`
    np.testing.assert_allclose(ahead.head(inside.height)["OT"].to_numpy(), inside["OT"].to_numpy(), rtol=1e-6)
    code, _, err = run_cli(["predict", "-m", trained["model"], "-i", str(root / "history.csv"), "--future",
                            str(root / "future.csv"), "-o", str(root / "next.csv"), "--tracking-uri", trained["uri"],
                            "-q"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(ahead.tail(H)["OT"].to_numpy(), pl.read_csv(root / "next.csv")["OT"].to_numpy(),
                               rtol=1e-5)
