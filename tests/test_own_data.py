"""A user's own data, end to end, on a data set no one here wrote: the weekly stock prices plotly ships in its wheel
(`plotly.data.stocks()`, 105 weeks of 6 series; nothing is downloaded), written in neuralforecast's long format.

The path the README gives a new user: long format in, split by date, train, tune a few trials, fine-tune on a later
slice, predict (the output comes back long), the logged pyfunc (what `forecast serve` answers with) on a long
DataFrame; and the long format's bad inputs, each one line and exit 2.
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.helpers import run_cli

L, H = 12, 4
SPLIT = "2019-05-06,2019-08-05"  # val from the first Monday of May 2019, test from August
pytestmark = pytest.mark.slow  # trains and tunes through the CLI


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import plotly.data

    root = tmp_path_factory.mktemp("own")
    wide = pl.from_pandas(plotly.data.stocks())
    long = wide.unpivot(index="date", variable_name="unique_id", value_name="y").rename({"date": "ds"})
    long = long.select("unique_id", "ds", "y")
    long.write_csv(root / "stocks.csv")
    long.filter(pl.col("ds") <= "2019-10-28").write_csv(root / "history.csv")
    return {"root": root, "long": long, "tickers": wide.columns[1:], "uri": f"sqlite:///{root / 'mlflow.db'}"}


def _last_run(uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    run = client.search_runs([exp.experiment_id], filter_string="tags.model = 'dlinear'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    return run.info.run_id


def test_long_format_split_by_date_train_tune_predict_and_pyfunc(panel, capsys, monkeypatch) -> None:
    root, uri = panel["root"], panel["uri"]
    monkeypatch.chdir(root)
    data = str(root / "stocks.csv")
    code, out, err = run_cli(["train", "-d", data, "-L", str(L), "-H", str(H), "--split", SPLIT, "--epochs", "3",
                              "--tracking-uri", uri], capsys)
    assert code == 0, err
    assert "`forecast ui` then experiment 'stocks'," in " ".join((out + err).split())  # the file's stem, as stored
    run_id = _last_run(uri, "stocks")
    code, out, err = run_cli(["runs", "-d", data, "--tracking-uri", uri], capsys)  # -d as train took it
    assert code == 0 and run_id in out, err
    from mlflow.tracking import MlflowClient

    params = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    assert params["data.split"] == SPLIT and params["data.n_vars"] == "6" and params["data.freq"].startswith("W")

    code, _, err = run_cli(["tune", "-d", data, "-L", str(L), "-H", str(H), "--split", SPLIT, "--trials", "2",
                            "--epochs", "2", "--storage", str(root / "optuna.db"), "--tracking-uri", uri, "-q"],
                           capsys)
    assert code == 0, err

    # fine-tune on a later slice (the last year), from the model just trained
    panel["long"].filter(pl.col("ds") >= "2019-01-07").write_csv(root / "later.csv")
    code, _, err = run_cli(["train", "-d", str(root / "later.csv"), "--init-from", f"runs:/{run_id}/model",
                            "--epochs", "2", "--batch-size", "8", "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    tuned = _last_run(uri, "later")
    assert tuned != run_id
    assert MlflowClient(tracking_uri=uri).get_run(tuned).data.tags["parent_model_run_id"] == run_id

    out = root / "forecast.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run_id}/model", "-i", str(root / "history.csv"), "-o",
                            str(out), "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    fc = pl.read_csv(out)
    assert fc.columns == ["unique_id", "ds", "y"] and fc.height == 6 * H
    assert sorted(fc["unique_id"].unique()) == sorted(panel["tickers"])
    assert fc.filter(pl.col("unique_id") == "AAPL")["ds"].to_list() == [
        "2019-11-04 00:00:00", "2019-11-11 00:00:00", "2019-11-18 00:00:00", "2019-11-25 00:00:00"]

    import mlflow.pyfunc

    from forecast import tracking

    history = pl.read_csv(root / "history.csv").to_pandas()
    with tracking.fluent_store(uri):
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    got = pl.from_pandas(model.predict(history))
    assert got.columns == ["unique_id", "ds", "y"] and got.height == 6 * H
    assert got.sort("unique_id", "ds")["y"].to_list() == pytest.approx(fc.sort("unique_id", "ds")["y"].to_list(),
                                                                      rel=1e-6)


def _bad(long: pl.DataFrame) -> dict[str, tuple[pl.DataFrame, str]]:
    first = long.filter(pl.col("unique_id") == "GOOG").head(1)
    return {
        "a duplicated pair": (pl.concat([long, first]), "series 'GOOG' has 2 rows at 2018-01-01 00:00:00; keep one"),
        "a single-row series": (pl.concat([long, first.with_columns(pl.lit("ONE").alias("unique_id"))]),
                                "series 'ONE' has a single row"),
        "a y that is not a number": (long.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("n/a"))
                                                       .otherwise(pl.col("y").cast(pl.Utf8)).alias("y")),
                                     "y is not a number at data row 4 ('n/a', series 'GOOG')"),
        "series on different weeks": (long.filter(~((pl.col("unique_id") == "FB") & (pl.col("ds") == "2018-06-04"))),
                                      "series 'FB' has 104 rows from 2018-01-01 00:00:00 to 2019-12-30 00:00:00, "
                                      "but the series together have 105 timestamps"),
        "a covariate column": (long.with_columns(pl.lit(1.0).alias("volume")), "column 'volume' is not unique_id"),
    }


@pytest.mark.parametrize("case", ["a duplicated pair", "a single-row series", "a y that is not a number",
                                  "series on different weeks", "a covariate column"])
def test_long_format_bad_input_is_one_line(case, panel, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    frame, needle = _bad(panel["long"])[case]
    path = tmp_path / "bad.csv"
    frame.write_csv(path)
    code, out, err = run_cli(["train", "-d", str(path), "-L", str(L), "-H", str(H), "--tracking-uri",
                              f"sqlite:///{tmp_path / 'm.db'}", "-q"], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.db").exists()


def test_a_split_date_outside_the_data_is_one_line(panel, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "-d", str(panel["root"] / "stocks.csv"), "-L", str(L), "-H", str(H),
                            "--split", "2021-01-01,2021-06-01", "-q"], capsys)
    assert code == 2 and "--split date 2021-01-01 00:00:00 is outside the data (2018-01-01 00:00:00 to " \
                         "2019-12-30 00:00:00)" in err
