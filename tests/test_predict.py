"""`forecast predict` and serving: a tiny model trained once, then predicted on from its MLflow artifact alone.

Checks: H rows with the right timestamps and columns; the values equal the LightningModule's own forecast of
the same window; no training data is needed; `mlflow models serve` answers the same forecast over HTTP; every
bad input is one `error:` line, exit 2 and no output file; `--rolling` on the test split reproduces the
training run's test metrics.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tests.helpers import asgi_post, free_port, module_forecast, run_cli, server_process

L, H = 96, 24
TEST_ROWS = (16 * 720 - L, 20 * 720)  # ETTh1's test split with its L rows of context


def _main(argv: list[str]) -> int:
    import cli

    old = sys.argv
    sys.argv = ["forecast", *argv]
    try:
        cli.main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old


def _train(uri: str, model: str, extra: list[str]) -> str:
    code = _main(["train", "-d", "ETTh1", "-m", model, "--seq-len", str(L), "--horizon", str(H), "--epochs", "1",
                  "--set", "train.limit_train_batches=3", "--set", "train.limit_val_batches=2",
                  "--tracking-uri", uri, "-q", *extra])
    assert code == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ETTh1")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.model = '{model}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A sqlite store with one tiny DLinear run (registered as etth1-dlinear@champion) and the input files."""
    data = Path(os.environ.get("FORECAST_DATA_DIR", "")).resolve()
    src = data / "ETTh1.csv.gz"
    if not src.exists():
        pytest.skip(f"benchmark data not found in {data}")
    root = tmp_path_factory.mktemp("predict")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("FORECAST_DATA_DIR", str(data))
        run_id = _train(uri, "dlinear", ["--register", "etth1-dlinear", "--alias", "champion"])
    raw = pl.read_csv(gzip.decompress(src.read_bytes()))
    raw.tail(500).write_csv(root / "history.csv")
    raw.slice(TEST_ROWS[0], TEST_ROWS[1] - TEST_ROWS[0]).write_csv(root / "test_split.csv")
    found = {"root": root, "uri": uri, "run_id": run_id, "raw": raw, "data": data}
    found["ref"] = _module_forecast(found, run_id, "dlinear", {})  # before any test hides the data
    return found


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every place training data could come from; loading it at all fails the test."""
    import forecast.data.series as series

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FORECAST_DATA_DIR", str(empty))
    monkeypatch.setenv("FORECAST_CACHE_DIR", str(empty))
    monkeypatch.setattr(series, "load_series", lambda *a, **k: pytest.fail("predict touched the training data"))
    monkeypatch.chdir(tmp_path)


def _module_forecast(store: dict, run_id: str, model: str, sets: dict) -> np.ndarray:
    """The LightningModule's own forecast after the last L rows of ETTh1, in original units."""
    from mlflow.tracking import MlflowClient

    from forecast.resolve import resolve
    from forecast.pipeline import build

    cfg = resolve(model, "ETTh1", {"data.seq_len": L, "data.horizon": H, "data.data_dir": str(store["data"]), **sets})
    dm, module = build(cfg, progress=False)
    local = MlflowClient(tracking_uri=store["uri"]).download_artifacts(run_id, "model_state.pt",
                                                                        str(store["root"]))
    module.model.load_state_dict(torch.load(local, weights_only=True))
    return module_forecast(module, dm.series, L, H)


def test_predict_equals_module_forecast_from_the_artifact_alone(store, no_data, tmp_path, capsys) -> None:
    ref = store["ref"]
    cols = store["raw"].columns
    out = tmp_path / "forecast.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{store['run_id']}/model", "-i", str(store["root"] / "history.csv"),
                            "-o", str(out), "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    fc = pl.read_csv(out, try_parse_dates=True)
    assert fc.columns == cols and fc.height == H
    last = store["raw"]["date"].str.to_datetime()[-1]
    expected = np.arange(1, H + 1) * np.timedelta64(1, "h") + np.datetime64(last)
    assert (fc["date"].to_numpy().astype("datetime64[s]") == expected.astype("datetime64[s]")).all()
    np.testing.assert_allclose(fc.select(cols[1:]).to_numpy(), ref, rtol=1e-5, atol=1e-5)

    # The registered alias and a downloaded model folder give the same forecast; --horizon truncates.
    import mlflow.artifacts

    from forecast.tracking import fluent_store

    with fluent_store(store["uri"]):  # MLflow resolves runs:/ID/model to the logged model via the fluent store
        folder = mlflow.artifacts.download_artifacts(f"runs:/{store['run_id']}/model", dst_path=str(tmp_path / "m"))
    for model in ("models:/etth1-dlinear@champion", folder):
        out2 = tmp_path / "short.csv"
        code, _, err = run_cli(["predict", "-m", model, "-i", str(store["root"] / "history.csv"), "-o", str(out2),
                                "--horizon", "5", "--tracking-uri", store["uri"]], capsys)
        assert code == 0, err
        short = pl.read_csv(out2)
        assert short.height == 5
        np.testing.assert_allclose(short.select(cols[1:]).to_numpy(), ref[:5], rtol=1e-5, atol=1e-5)

    # Without --output: a small table on stdout.
    code, printed, _ = run_cli(["predict", "-m", folder, "-i", str(store["root"] / "history.csv")], capsys)
    assert code == 0 and "next 24 steps" in printed and "2018-06-26 20:00:00" in printed and "OT" in printed


def test_long_format_and_parquet_round_trip(store, no_data, tmp_path, capsys) -> None:
    model = f"runs:/{store['run_id']}/model"
    hist = pl.read_csv(store["root"] / "history.csv", try_parse_dates=True)
    hist.select(["OT", *hist.columns[:-1]]).write_parquet(tmp_path / "history.parquet")  # reordered: fine
    code, _, err = run_cli(["predict", "-m", model, "-i", str(tmp_path / "history.parquet"), "-o",
                            str(tmp_path / "fc.parquet"), "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    wide = pl.read_parquet(tmp_path / "fc.parquet")
    assert wide.schema["date"] == pl.Datetime("ns") and wide.height == H and wide.columns == hist.columns
    code, _, err = run_cli(["predict", "-m", model, "-i", str(store["root"] / "history.csv"), "-o",
                            str(tmp_path / "long.csv"), "--format", "long", "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    long = pl.read_csv(tmp_path / "long.csv", try_parse_dates=True)
    assert long.columns == ["variable", "date", "value"] and long.height == H * 7
    back = long.pivot(on="variable", index="date", values="value").select(hist.columns)
    np.testing.assert_allclose(back.drop("date").to_numpy(), wide.drop("date").to_numpy(), rtol=1e-9)


def test_serving_beyond_this_machine_says_so_even_when_quiet(store, no_data, capsys, monkeypatch) -> None:
    import uvicorn

    bound: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: bound.append(k["host"]))
    model = f"runs:/{store['run_id']}/model"
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    for host, quiet in (("0.0.0.0", ["-q"]), ("127.0.0.1", [])):
        code, out, err = run_cli(["serve", "-m", model, "--host", host, "-p", port, "--tracking-uri", store["uri"],
                                  *quiet], capsys)
        assert code == 0, err
        warned = "warning: --host 0.0.0.0 accepts requests from other machines, without authentication"
        assert (warned in err) == (host == "0.0.0.0") and (out == "") == bool(quiet), (out, err)
    assert bound == ["0.0.0.0", "127.0.0.1"]


def test_a_table_piped_in_gives_the_forecast_on_stdout(store, no_data, tmp_path, capsys, monkeypatch) -> None:
    """``-i -`` reads CSV, gzipped CSV or parquet from stdin; ``-o -`` writes the CSV a file would hold to stdout,
    alone (what is said about it goes to stderr); an empty stdin is one line."""
    import io
    import types

    model, history = f"runs:/{store['run_id']}/model", store["root"] / "history.csv"
    code, _, err = run_cli(["predict", "-m", model, "-i", str(history), "-o", str(tmp_path / "fc.csv"), "--level", "80",
                            "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    want = (tmp_path / "fc.csv").read_text()
    pl.read_csv(history, try_parse_dates=True).write_parquet(tmp_path / "h.parquet")
    for piped in (history.read_bytes(), gzip.compress(history.read_bytes()), (tmp_path / "h.parquet").read_bytes()):
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(piped)))
        code, out, err = run_cli(["predict", "-m", model, "-i", "-", "-o", "-", "--level", "80", "--tracking-uri",
                                  store["uri"]], capsys)
        assert code == 0 and out == want and err == "", err
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"")))
    code, out, err = run_cli(["predict", "-m", model, "-i", "-", "--tracking-uri", store["uri"]], capsys)
    assert code == 2 and out == "" and err.strip() == ("error: stdin is empty; pipe a CSV or parquet table into it, or "
                                                       "give a file.")


@pytest.mark.parametrize("layout", ["wide", "long", "panel"])
def test_the_pyfunc_frame_is_the_polars_frame_in_pandas(layout: str) -> None:
    """The pyfunc builds its pandas answer from the forecast's arrays; it is exactly the frame predict writes,
    converted: the same columns in the same order, dtypes and values, with quantiles and interval bounds."""
    import pandas as pd

    from forecast.inference.io import Forecast, forecast_columns, forecast_frame, panel_columns, panel_frame

    rng = np.random.default_rng(0)
    dates = np.arange("2024-01-01T00", "2024-01-02T00", dtype="datetime64[h]").astype("datetime64[ns]")
    values = rng.standard_normal((len(dates), 3))
    fc = Forecast(dates, values, ["a", "b", "OT"], bounds={0.8: (values - 1, values + 1), 0.9: (values - 2, values + 2)},
                  quantiles={0.1: values - 1.5, 0.9: values + 1.5})
    if layout == "panel":
        want, got = panel_frame(fc).to_pandas(), pd.DataFrame(panel_columns(fc))
    else:
        want, got = forecast_frame(fc, layout).to_pandas(), pd.DataFrame(forecast_columns(fc, layout))
    assert len(got.columns) == (1 + 3 * 7 if layout == "wide" else 3 + 2 + 4)  # each value, 2 quantiles, 4 bounds
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_rolling_reproduces_the_training_test_metrics(store, no_data, tmp_path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from forecast.inference.predict import run_predict

    m = MlflowClient(tracking_uri=store["uri"]).get_run(store["run_id"]).data.metrics
    res = run_predict(f"runs:/{store['run_id']}/model", store["root"] / "test_split.csv", rolling=True,
                      tracking_uri=store["uri"])
    got = res.rolling.metrics
    assert got["windows"] == m["test_windows"] == 2857
    for key in ("mse", "mae", "mse_orig", "mae_orig", "coverage_80", "coverage_90", "width_80", "width_90_orig",
                "crps", "crps_orig"):  # the conformal intervals and CRPS score as training's test pass does
        assert got[key] == pytest.approx(m[f"test_{key}"], rel=1e-5), key
    out = tmp_path / "rolling.parquet"
    model, test_csv = f"runs:/{store['run_id']}/model", str(store["root"] / "test_split.csv")
    code, printed, err = run_cli(["predict", "-m", model, "-i", test_csv, "--rolling", "-o", str(out),
                                  "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    assert "2,857 scored windows" in printed and f"{m['test_mse']:.4f}" in printed
    assert "coverage 80%" in printed and f"{m['test_crps']:.4f}" in printed
    frame = pl.read_parquet(out)
    assert frame.height == (TEST_ROWS[1] - TEST_ROWS[0] - L + 1) * H
    assert frame.columns[:3] == ["origin", "date", "step"] and "OT_lo80" not in frame.columns
    # --adaptive: intervals that follow the test period, scored beside the static ones and written with --level
    code, printed, err = run_cli(["predict", "-m", model, "-i", test_csv, "--rolling", "--adaptive", "--level", "80",
                                  "-o", str(out), "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    assert "adaptive coverage 80%" in printed and "adaptive CRPS" in printed
    banded = pl.read_parquet(out)
    assert banded.columns == [*frame.columns[:3], *[f"{c}{s}" for c in frame.columns[3:] for s in ("", "_lo80",
                                                                                                    "_hi80")]]
    assert (banded["OT_lo80"] <= banded["OT"]).all() and (banded["OT_hi80"] >= banded["OT"]).all()
    np.testing.assert_array_equal(banded["OT"].to_numpy(), frame["OT"].to_numpy())
    res = run_predict(model, store["root"] / "test_split.csv", rolling=True, tracking_uri=store["uri"], adaptive=0.05)
    got = res.rolling.metrics
    assert got["coverage_80"] == pytest.approx(m["test_coverage_80"], rel=1e-5)  # the static ones are unchanged
    assert abs(got["adaptive_coverage_80"] - 0.8) < abs(got["coverage_80"] - 0.8) and got["adaptive_rate"] == 0.05
    # the first window's adaptive bounds are the static ones: nothing has been observed yet
    from forecast.inference.predict import load_model

    lm = load_model(model, store["uri"])
    half = lm.intervals[1][lm.intervals[0].index(0.8), :, -1] * lm.meta.std[-1]  # OT's static 80% half-widths [H]
    first, last = banded.head(H), banded.tail(H)
    np.testing.assert_allclose((first["OT_hi80"] - first["OT"]).to_numpy(), half, rtol=1e-5)
    assert not np.allclose((last["OT_hi80"] - last["OT"]).to_numpy(), half, rtol=1e-3)  # by then it has adapted


def _bad_inputs(root: Path, hist: pl.DataFrame) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected message fragment), one per validation rule."""
    d = root / "bad"
    d.mkdir(exist_ok=True)
    n = pl.int_range(pl.len())
    cases = {}

    def csv(name: str, frame: pl.DataFrame, message: str) -> None:
        path = d / f"{name}.csv"
        frame.write_csv(path)
        cases[name] = (path, message)

    csv("missing", hist.drop("OT"), "column 'OT' is missing")
    csv("extra", hist.with_columns(pl.lit(1.0).alias("extra")), "unexpected column 'extra'")
    csv("non_numeric", hist.with_columns(pl.when(n == 10).then(pl.lit("abc")).otherwise(pl.col("HULL").cast(pl.Utf8))
                                         .alias("HULL")), "column 'HULL' has a non-numeric value 'abc' at data row 11")
    csv("nan", hist.with_columns(pl.when(n == 450).then(None).otherwise(pl.col("MUFL")).alias("MUFL")),
        "column 'MUFL' has an empty or NaN value at data row 451")
    csv("short", hist.head(50), "has 50 rows but the model reads the last L=96")
    csv("no_date", hist.drop("date"), "has no 'date' column")
    csv("bad_date", hist.with_columns(pl.when(n == 7).then(pl.lit("yesterday")).otherwise(pl.col("date"))
                                      .alias("date")), "unparseable date 'yesterday' at data row 8")
    csv("duplicate", hist.with_columns(pl.when(n == 20).then(pl.col("date").shift(1)).otherwise(pl.col("date"))
                                       .alias("date")), "duplicated timestamp 2018-06-06 19:00:00 at data row 21")
    swapped = hist.with_columns(pl.when(n == 20).then(pl.col("date").shift(-1)).when(n == 21)
                                .then(pl.col("date").shift(1)).otherwise(pl.col("date")).alias("date"))
    csv("unsorted", swapped, "timestamps are not sorted (data row 22")
    csv("frequency", hist.gather_every(2), "2h apart but the model was trained on 'h' data")
    csv("gap", hist.filter(n != 300), "at data row 301 breaks the 'h' frequency")
    (d / "empty.csv").write_text("")
    cases["empty"] = (d / "empty.csv", "is empty")
    (d / "header.csv").write_text(",".join(hist.columns) + "\n")
    cases["header_only"] = (d / "header.csv", "has no data rows")
    (d / "data.json").write_text("{}")
    cases["json"] = (d / "data.json", "is not a CSV or parquet file")
    (d / "fake.parquet").write_text("date,a\n1,2\n")
    cases["fake_parquet"] = (d / "fake.parquet", "could not be read as CSV or parquet")
    return cases


BAD = ["missing", "extra", "non_numeric", "nan", "short", "no_date", "bad_date", "duplicate", "unsorted",
       "frequency", "gap", "empty", "header_only", "json", "fake_parquet"]


@pytest.fixture(scope="module")
def bad_inputs(store: dict) -> dict[str, tuple[Path, str]]:
    return _bad_inputs(store["root"], pl.read_csv(store["root"] / "history.csv"))


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_no_file(case, store, bad_inputs, no_data, tmp_path, capsys) -> None:
    path, message = bad_inputs[case]
    out = tmp_path / "out" / "forecast.csv"
    out.parent.mkdir()
    code, printed, err = run_cli(["predict", "-m", f"runs:/{store['run_id']}/model", "-i", str(path), "-o", str(out),
                                  "--tracking-uri", store["uri"]], capsys)
    assert code == 2, (printed, err)
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert list(out.parent.iterdir()) == []


def test_fill_and_option_errors(store, bad_inputs, no_data, tmp_path, capsys) -> None:
    model = f"runs:/{store['run_id']}/model"
    nan_file = bad_inputs["nan"][0]
    for method in ("ffill", "interpolate"):
        out = tmp_path / f"{method}.csv"
        code, _, err = run_cli(["predict", "-m", model, "-i", str(nan_file), "-o", str(out), "--fill", method,
                                "--tracking-uri", store["uri"]], capsys)
        assert code == 0, err
        assert np.isfinite(pl.read_csv(out).drop("date").to_numpy()).all()
    # A lost hour: --fill adds the step and fills it, as if the file had held the interpolated row.
    full = pl.read_csv(store["root"] / "history.csv")
    full.filter(pl.int_range(pl.len()) != 450).write_csv(tmp_path / "lost.csv")
    mended = full.with_columns((pl.when(pl.int_range(pl.len()) == 450)
                                .then((pl.col(c).shift(1) + pl.col(c).shift(-1)) / 2).otherwise(pl.col(c))
                                for c in full.columns[1:]))
    mended.write_csv(tmp_path / "mended.csv")
    got = []
    for name, extra in (("lost.csv", ["--fill", "interpolate"]), ("mended.csv", [])):
        code, _, err = run_cli(["predict", "-m", model, "-i", str(tmp_path / name), "-o", str(tmp_path / f"o{name}"),
                                "--tracking-uri", store["uri"], *extra], capsys)
        assert code == 0, err
        got.append(pl.read_csv(tmp_path / f"o{name}").drop("date").to_numpy())
    np.testing.assert_allclose(got[0], got[1], rtol=1e-5, atol=1e-5)
    hist = str(store["root"] / "history.csv")
    for argv, message in [
        (["--horizon", "25"], "--horizon 25 is outside 1..24"),
        (["--fill", "mean"], "unknown --fill 'mean'"),
        (["-o", str(tmp_path / "x.xlsx")], "must end in .csv or .parquet"),
        (["-o", "/proc/x.csv"], "--output '/proc/x.csv' could not be written (No such file or directory); give a "
                                "path you can write to."),  # a folder that takes no files, as root finds it too
        (["--format", "tall"], "--format 'tall' is not one of wide, long"),
        (["--adaptive"], "--adaptive needs --rolling"),
        (["--rolling", "--adaptive", "--adaptive-rate", "2"], "--adaptive-rate 2 is outside (0, 1]"),
        (["--rolling", "--adaptive-rate", "0.1"], "--adaptive-rate sets the step of --adaptive intervals"),
        (["--rolling", "--level", "95"], "--level 95 is not one the model has; its calibrated interval levels: 20, "
                                         "40, 60, 80, 90."),
    ]:
        code, _, err = run_cli(["predict", "-m", model, "-i", hist, "--tracking-uri", store["uri"], *argv], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["predict", "-m", "models:/no-such-model@champion", "-i", hist,
                            "--tracking-uri", store["uri"]], capsys)
    assert code == 2 and "could not be fetched" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["train", "-d", "ETTh1", "-m", "dlinear", "--register", "x", "--alias", "latest",
                            "--tracking-uri", store["uri"]], capsys)
    assert code == 2 and "alias 'latest' is not allowed" in err


def _post(url: str, payload: dict, timeout: float = 30) -> tuple[int, dict]:
    return _post_raw(url, json.dumps(payload).encode(), timeout)


@pytest.mark.slow
def test_mlflow_models_serve_answers_the_same_forecast(store, tmp_path) -> None:
    from forecast.inference.io import prepare_history, read_input
    from forecast.inference.predict import forecast_next, load_model

    hist_path = store["root"] / "history.csv"
    lm = load_model(f"runs:/{store['run_id']}/model", store["uri"])
    expected = forecast_next(lm, prepare_history(read_input(hist_path), lm.meta, "history"))
    port = free_port()
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "FORECAST_DATA_DIR": str(empty), "FORECAST_CACHE_DIR": str(empty)}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{store['run_id']}/model",
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with server_process(argv, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env, tmp_path, timeout=150):
        hist = pl.read_csv(hist_path)
        payload = {"dataframe_split": {"columns": hist.columns, "data": hist.rows()}}
        status, body = _post(f"http://127.0.0.1:{port}/invocations", payload)
        assert status == 200, body
        got = pl.DataFrame(body["predictions"])
        assert got.columns == hist.columns and got.height == H
        assert got["date"][0].startswith("2018-06-26T20:00:00")
        np.testing.assert_allclose(got.drop("date").to_numpy(), expected.values, rtol=1e-6)
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {**payload, "params": {"horizon": 5}})
        assert status == 200 and len(body["predictions"]) == 5, body
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {**payload, "params": {"level": "80"}})
        assert status == 200, body
        banded = pl.DataFrame(body["predictions"])
        assert banded.columns[-3:] == ["OT", "OT_lo80", "OT_hi80"]
        np.testing.assert_allclose(banded["OT"].to_numpy(), got["OT"].to_numpy(), rtol=1e-6)
        assert (banded["OT_lo80"] < banded["OT"]).all() and (banded["OT"] < banded["OT_hi80"]).all()
        status, body = _post(f"http://127.0.0.1:{port}/invocations",
                             {"dataframe_split": {"columns": hist.columns, "data": hist.rows()[:50]}})
        assert status == 400 and "has 50 rows but the model reads the last L=96" in body.get("message", ""), body
        # Bad requests: HTTP 400 with our one line alone (no echo of the payload), as `forecast predict` says it.
        rows = hist.rows()
        bad = {"an extra column": ({"columns": [*hist.columns, "extra"], "data": [[*r, 1.0] for r in rows]}, None,
                                   "column 'extra'"),
               "a missing column": ({"columns": hist.columns[:-1], "data": [r[:-1] for r in rows]}, None, "OT"),
               "too long a horizon": ({"columns": hist.columns, "data": rows}, {"horizon": 1000},
                                      "params.horizon 1000 is outside 1..24"),
               "an unknown fill": ({"columns": hist.columns, "data": rows}, {"fill": "magic"},
                                   "unknown params.fill 'magic'"),
               "an uncalibrated level": ({"columns": hist.columns, "data": rows}, {"level": "85"},
                                         "params.level 85 is not one the model has"),
               "quantiles of a point model": ({"columns": hist.columns, "data": rows}, {"quantiles": "0.1"},
                                              "quantiles")}
        for case, (split, params, needle) in bad.items():
            status, body = _post(f"http://127.0.0.1:{port}/invocations",
                                 {"dataframe_split": split, **({"params": params} if params else {})})
            message = body.get("message", "")
            assert status == 400 and needle in message, (case, body)
            assert "\n" not in message and "Failed to predict" not in message and len(message) < 400, (case, message)


def _post_raw(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.mark.slow
def test_forecast_serve_bounds_requests_and_answers_in_one_line(store, tmp_path) -> None:
    """`forecast serve`: the same forecast as predict; malformed JSON and an oversized body get one line (400,
    413) and the worker goes on answering; a long history is cut to the last L rows before it is parsed."""
    from forecast.inference.io import prepare_history, read_input
    from forecast.inference.predict import forecast_next, load_model

    hist_path = store["root"] / "history.csv"
    lm = load_model(f"runs:/{store['run_id']}/model", store["uri"])
    expected = forecast_next(lm, prepare_history(read_input(hist_path), lm.meta, "history"))
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    argv = [sys.executable, "-m", "cli", "serve", "-m", "models:/etth1-dlinear@champion", "--tracking-uri",
            store["uri"], "-p", str(port), "--max-request-mb", "1"]
    url = f"http://127.0.0.1:{port}/invocations"
    with server_process(argv, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env, tmp_path,
                        timeout=150) as proc:
        hist = pl.read_csv(hist_path)
        good = json.dumps({"dataframe_split": {"columns": hist.columns, "data": hist.rows()}}).encode()
        status, body = _post_raw(url, good)
        assert status == 200, body
        np.testing.assert_allclose(pl.DataFrame(body["predictions"]).drop("date").to_numpy(), expected.values,
                                   rtol=1e-6)
        status, body = _post_raw(url, b'{"dataframe_split": {"columns": ["date"')
        assert status == 400 and body["message"].startswith("the request body is not valid JSON"), body
        rows = hist.rows() * 40  # 20,000 rows, about 1.5 MB: over the 1 MB limit
        big = json.dumps({"dataframe_split": {"columns": hist.columns, "data": rows}}).encode()
        assert len(big) > 2**20
        status, body = _post_raw(url, big)
        assert status == 413 and "larger than the server's limit of 1 MB" in body["message"], body
        assert "\n" not in body["message"]
        status, body = _post_raw(url, good)
        assert status == 200 and len(body["predictions"]) == H
        assert proc.poll() is None
        proc.terminate()  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal (exit by SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Finished server process" in (tmp_path / "serve.log").read_text()


def test_itransformer_with_time_marks(store, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(store["root"])
    monkeypatch.setenv("FORECAST_DATA_DIR", str(store["data"]))
    sets = {"model.d_model": 16, "model.d_ff": 16, "model.e_layers": 1, "model.n_heads": 2}
    run_id = _train(store["uri"], "itransformer", [a for k, v in sets.items() for a in ("--set", f"{k}={v}")])
    ref = _module_forecast(store, run_id, "itransformer", sets)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run_id}/model", "-i", str(store["root"] / "history.csv"),
                            "-o", str(out), "--tracking-uri", store["uri"]], capsys)
    assert code == 0, err
    np.testing.assert_allclose(pl.read_csv(out).drop("date").to_numpy(), ref, rtol=1e-4, atol=1e-5)
    from forecast.inference.predict import load_model

    assert load_model(f"runs:/{run_id}/model", store["uri"]).meta.n_marks == 4  # hour, weekday, day, day of year


def test_minute_data_with_hourly_marks_predicts_with_the_same_marks(tmp_path, monkeypatch, capsys) -> None:
    """iTransformer on 10-minute data uses data.mark_freq=h (its configs/ default): the model artifact records it
    and `forecast predict` builds the future marks at that step (4 features, not the 5 of 10-minute data)."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    n = 1200
    dates = pd.date_range("2021-03-01", periods=n, freq="10min")
    t = np.arange(n, dtype=np.float64)
    frame = pd.DataFrame({"date": dates, "a": np.sin(t / 12), "b": np.cos(t / 30) + t / n})
    frame.to_csv(tmp_path / "ten.csv", index=False)
    frame.tail(200).to_csv(tmp_path / "history.csv", index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli(["train", "-d", str(tmp_path / "ten.csv"), "-m", "itransformer", "--seq-len", "48",
                            "--horizon", "12", "--epochs", "1", "--set", "model.d_model=16", "--set", "model.d_ff=16",
                            "--set", "model.e_layers=1", "--set", "model.n_heads=2", "--tracking-uri", uri, "-q"],
                           capsys)
    assert code == 0, err
    from mlflow.tracking import MlflowClient

    from forecast.inference.predict import load_model

    (run,) = MlflowClient(tracking_uri=uri).search_runs([MlflowClient(tracking_uri=uri).get_experiment_by_name("ten")
                                                         .experiment_id])
    assert run.data.params["data.mark_freq"] == "h" and run.data.params["data.n_marks"] == "4"
    meta = load_model(f"runs:/{run.info.run_id}/model", uri).meta
    assert (meta.freq, meta.mark_freq, meta.n_marks) == ("10min", "h", 4)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run.info.run_id}/model", "-i", str(tmp_path / "history.csv"),
                            "-o", str(out), "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    fc = pl.read_csv(out, try_parse_dates=True)
    assert fc.columns == ["date", "a", "b"] and fc.height == 12
    assert fc["date"][0] == dates[-1] + pd.Timedelta("10min")


@pytest.mark.slow
def test_the_forecast_command_exits_after_fetching_a_runs_model(store, tmp_path) -> None:
    """The command as a user runs it (its quick exit, forecast.commands.entry) ends once the output is written, even
    though MLflow's download left an idle thread pool behind (joining it without waking it waited forever)."""
    out = tmp_path / "fc.csv"
    argv = [sys.executable, "-m", "cli", "predict", "-m", f"runs:/{store['run_id']}/model", "-i",
            str(store["root"] / "history.csv"), "-o", str(out), "--tracking-uri", store["uri"], "-q"]
    proc = subprocess.run(argv, cwd=tmp_path, env={**os.environ, "FORECAST_CACHE_DIR": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text().count("\n") > 1


@pytest.mark.slow
def test_a_runs_model_is_fetched_once_then_used_from_the_cache_checked(store, tmp_path) -> None:
    """The second predict of a runs:/ model neither asks MLflow nor imports it; an edited cached copy is fetched
    again, and the forecast is the same each time."""
    cache = tmp_path / "cache"
    env = {**os.environ, "FORECAST_CACHE_DIR": str(cache)}
    code = ("import sys; from pathlib import Path; from forecast.inference.predict import run_predict; "
            f"r = run_predict('runs:/{store['run_id']}/model', Path(r'{store['root'] / 'history.csv'}'), "
            f"tracking_uri=r'{store['uri']}'); "
            "print(repr(r.frame['OT'].to_list()), 'mlflow' in sys.modules)")

    def predict() -> tuple[str, str]:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        values, imported = out.stdout.strip().rsplit(" ", 1)
        return values, imported

    first, imported = predict()
    assert imported == "True"  # fetched from the store
    kept = list(cache.glob(f"models/*/{store['run_id']}/model/manifest.json"))
    assert len(kept) == 1
    second, imported = predict()
    assert (second, imported) == (first, "False")  # from the cache, without MLflow
    state = next(kept[0].parent.rglob("model_state.pt"))
    state.write_bytes(state.read_bytes()[:100])  # a damaged copy
    third, imported = predict()
    assert (third, imported) == (first, "True")  # fetched again, whole


def test_serves_direct_answer_is_the_scoring_servers_to_the_byte(store) -> None:
    """`forecast serve` answers a wide dataframe_split request itself; its bytes are MLflow's scoring server's, for
    plain, horizon, interval and fill requests; a request the model refuses gets what the scoring server's answer
    becomes behind the guard."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from forecast.inference.server import RequestGuard, answer_split

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{store['run_id']}/model")
    hist = pl.read_csv(store["root"] / "history.csv").tail(L)
    rows = hist.rows()
    for params in (None, {"horizon": 5}, {"level": "80,90"}, {"horizon": 3, "fill": "ffill"}):
        doc = {"dataframe_split": {"columns": hist.columns, "data": rows}, **({"params": params} if params else {})}
        body = json.dumps(doc)
        ref = scoring_server.invocations(body, "application/json", model, None)
        assert ref.status == 200
        assert answer_split(model, json.loads(body)) == (200, ref.response.encode()), params
    nan = [list(r) for r in rows]
    nan[-1][-1] = None
    doc = {"dataframe_split": {"columns": hist.columns, "data": nan}}
    guard = RequestGuard(scoring_server.init(model), L, 1 << 20)  # no model: the scoring server answers
    status, _, raw = asgi_post(guard, json.dumps(doc).encode())
    assert status == 400 and answer_split(model, doc) == (400, raw)
    assert "has an empty or NaN value" in json.loads(raw)["message"]
