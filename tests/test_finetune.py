"""Keeping a model current: `forecast train --init-from` on a later slice of the data.

Checks: the run starts from the parent's weights (with a vanishing lr its val loss is the parent's on the same
windows), keeps its scaler unless --refit-scaler, records its lineage; --register promotes it only when it beats the
parent (or with --force), and works with a store outside the working folder (no stray mlflow.db); columns or a
frequency unlike the parent's, or a parent that cannot be found, are one line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import etth1_raw, run_cli

pytestmark = pytest.mark.slow  # trains several small models through the CLI
FLAGS = ["-L", "96", "-H", "24", "--set", "train.limit_train_batches=20", "-q"]


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    raw = etth1_raw()
    root = tmp_path_factory.mktemp("finetune")
    raw.head(8000).write_csv(root / "early.csv")
    raw.tail(6000).write_csv(root / "later.csv")
    return {"root": root, "uri": f"sqlite:///{root / 'store' / 'mlflow.db'}", "raw": raw}


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _scaler(uri: str, run_id: str, dest: Path) -> dict:
    dest.mkdir()
    return json.loads(Path(_client(uri).download_artifacts(run_id, "scaler.json", str(dest))).read_text())


def _latest(uri: str):  # noqa: ANN202
    client = _client(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_fine_tuning_starts_from_the_parent_and_promotes_only_a_better_model(lineage, tmp_path, capsys,
                                                                             monkeypatch) -> None:
    root, uri = lineage["root"], lineage["uri"]
    (root / "store").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)  # the store is elsewhere: registering must not create ./mlflow.db
    code, _, err = run_cli(["train", "-d", str(root / "early.csv"), "--epochs", "2", "--tracking-uri", uri,
                            "--register", "etth1", *FLAGS], capsys)
    assert code == 0, err
    parent_run = _latest(uri).info.run_id
    assert str(_client(uri).get_model_version_by_alias("etth1", "champion").version) == "1"

    # a vanishing lr: the weights stay the parent's, so the val loss is the parent's on the same windows
    code, _, err = run_cli(["train", "-d", str(root / "later.csv"), "--init-from", "models:/etth1@champion",
                            "--epochs", "1", "--lr", "1e-12", "--tracking-uri", uri, *FLAGS], capsys)
    assert code == 0, err
    run = _latest(uri)
    m, tags = run.data.metrics, run.data.tags
    assert m["best_val_loss"] == pytest.approx(m["parent_val_loss"], rel=1e-5)
    assert tags["init_from"] == "models:/etth1@champion" and tags["parent_model_run_id"] == parent_run
    assert f"Fine-tuned from models:/etth1@champion (run {parent_run})" in tags["mlflow.note.content"]
    assert run.data.params["data.seq_len"] == "96" and run.data.params["train.limit_train_batches"] == "20"
    kept = _scaler(uri, run.info.run_id, tmp_path / "kept")
    assert kept["mean"] == _scaler(uri, parent_run, tmp_path / "parent")["mean"]  # the parent's scaler, kept

    # worse than the parent (a huge lr): not promoted, unless --force
    worse = ["train", "-d", str(root / "later.csv"), "--init-from", "models:/etth1@champion", "--epochs", "1",
             "--lr", "5", "--register", "etth1", "--tracking-uri", uri, *FLAGS]
    code, _, err = run_cli(worse, capsys)
    assert code == 0 and "not better; not registered as etth1@champion (--force registers it anyway)" in err
    assert str(_client(uri).get_model_version_by_alias("etth1", "champion").version) == "1"
    code, _, err = run_cli([*worse, "--force"], capsys)
    assert code == 0, err
    assert str(_client(uri).get_model_version_by_alias("etth1", "champion").version) == "2"

    # better than the parent: promoted
    code, _, err = run_cli(["train", "-d", str(root / "later.csv"), "--init-from", f"runs:/{parent_run}/model",
                            "--epochs", "3", "--refit-scaler", "--register", "etth1", "--tracking-uri", uri, *FLAGS],
                           capsys)
    assert code == 0, err
    run = _latest(uri)
    assert run.data.metrics["best_val_loss"] < run.data.metrics["parent_val_loss"]
    assert str(_client(uri).get_model_version_by_alias("etth1", "champion").version) == "3"
    refit = _scaler(uri, run.info.run_id, tmp_path / "refit")
    later = lineage["raw"].tail(6000).head(int(6000 * 0.7))
    assert refit["mean"][0] == pytest.approx(later["HUFL"].mean(), rel=1e-5)  # fit on the new train split
    assert not (tmp_path / "mlflow.db").exists()


def test_a_parent_unlike_the_data_is_one_line(lineage, tmp_path, capsys, monkeypatch) -> None:
    root, uri = lineage["root"], lineage["uri"]
    monkeypatch.chdir(tmp_path)
    if not (root / "store" / "mlflow.db").exists():
        pytest.skip("needs the parent of the test above")
    later = pl.read_csv(root / "later.csv")
    later.drop("OT").write_csv(tmp_path / "six.csv")
    later.gather_every(2).write_csv(tmp_path / "2h.csv")
    cases = {"six.csv": "six.csv lacks OT (the parent's columns: HUFL, HULL, MUFL, MULL, LUFL, LULL, OT)",
             "2h.csv": "2h.csv is at frequency 2h, the parent at h"}
    for name, needle in cases.items():
        code, _, err = run_cli(["train", "-d", str(tmp_path / name), "--init-from", "models:/etth1@champion",
                                "--tracking-uri", uri, *FLAGS], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["train", "-d", str(root / "later.csv"), "--init-from", "models:/etth1@champion", "-m",
                            "olinear", "--tracking-uri", uri, *FLAGS], capsys)  # not trained as the parent's dlinear
    assert code == 2 and err.startswith("error: --model olinear is not the model of --init-from") and \
        "(dlinear)" in err and len(err.strip().splitlines()) == 1, err
    reshaping = {("-L", "48"): "data.seq_len is 96 there and 48 here",
                 ("--target", "OT"): "data.target is none there and OT here",
                 ("--set", "train.loss=quantile"): "it was trained for a point forecast, these settings ask for "
                                                   "quantile levels 0.1, 0.5, 0.9",
                 ("--set", "model.individual=true"): "its weights do not fit the one these settings build "
                                                     "(model.individual False there, True here)"}
    for flags, needle in reshaping.items():  # each would build a network the parent's weights do not fit
        code, _, err = run_cli(["train", "-d", str(root / "later.csv"), "--init-from", "models:/etth1@champion",
                                "--tracking-uri", uri, *FLAGS, *flags], capsys)
        assert code == 2 and err.startswith("error: --init-from keeps the parent's network") and needle in err, err
        assert "train afresh without --init-from" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["train", "-d", str(tmp_path / "six.csv"), "--init-from", "models:/nope@champion",
                            "--tracking-uri", uri, *FLAGS], capsys)
    assert code == 2 and err.startswith("error: --init-from: model 'models:/nope@champion' could not be fetched")
