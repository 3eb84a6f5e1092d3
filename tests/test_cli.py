"""CLI behaviour: light --help, the end-to-end train path into MLflow, and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _train(model: str, *rest: str) -> list[str]:
    """``forecast train --dataset ETTh1 --model MODEL ...``'s arguments."""
    return ["train", "--dataset", "ETTh1", "--model", model, *rest]


@pytest.mark.slow
def test_help_imports_neither_torch_nor_mlflow() -> None:
    code = (
        "import sys, runpy; sys.argv=['forecast','--help']\n"
        "import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','mlflow','lightning') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "train" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout


def test_train_end_to_end_records_the_run(data_dir: Path, tmp_path: Path, monkeypatch, capsys, recwarn) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    code, out, err = run_cli(_train("dlinear", "--epochs", "2", "--set", "train.limit_train_batches=5",
                                    "--tracking-uri", uri), capsys)
    assert code == 0, err
    assert "test MSE" in out and "run id" in out
    train_out = out
    assert "epoch 1/2" in err  # one progress line per epoch when not on a terminal
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "mlruns").exists()
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]  # Lightning's internals stay quiet

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ETTh1")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "dlinear_ETTh1_sl336_pl96"
    assert run.info.status == "FINISHED"
    assert run.data.params["data.seq_len"] == "336" and run.data.params["train.lr"] == "0.005"
    assert run.data.params["model.individual"] == "False" and run.data.params["data.n_vars"] == "7"
    assert run.data.tags["dataset"] == "ETTh1" and len(run.data.tags["data_sha256"]) == 64
    m = run.data.metrics
    assert m["test_windows"] == 2785 and 0 < m["test_mse"] < 2 and m["test_mse_orig"] > m["test_mse"]
    # the summary shows what the conformal intervals achieved, as logged
    for row, value in (("test CRPS", m["test_crps"]), ("80% interval: coverage", m["test_coverage_80"]),
                       ("90% interval: mean width", m["test_width_90"]),
                       ("test MSE as published (2,784 windows)", m["test_mse_published"])):
        assert any(row in line and f"{value:.4f}" in line for line in train_out.splitlines()), (row, train_out)
    assert [x.step for x in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 2
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_state.pt", "step_mse.csv", "forecast.png", "scaler.json"} <= names
    local = Path(client.download_artifacts(run.info.run_id, "step_mse.csv", str(tmp_path)))
    assert len(local.read_text().strip().splitlines()) == 1 + 96
    # each interval's coverage and mean width per step, standardized and in original units: the run's figures
    steps = np.genfromtxt(client.download_artifacts(run.info.run_id, "step_coverage.csv", str(tmp_path)),
                          delimiter=",", names=True)
    assert steps.dtype.names == ("step", "coverage_80", "width_80", "width_80_orig", "coverage_90", "width_90",
                                 "width_90_orig") and len(steps) == 96
    for name in steps.dtype.names[1:]:
        assert steps[name].mean() == pytest.approx(m[f"test_{name}"], rel=1e-5), name
    assert (steps["width_90"] >= steps["width_80"]).all() and steps["width_90"].sum() > steps["width_80"].sum()
    scaler = json.loads(Path(client.download_artifacts(run.info.run_id, "scaler.json", str(tmp_path))).read_text())
    assert scaler["columns"][-1] == "OT" and scaler["freq"] == "h"

    import torch

    state_path = Path(client.download_artifacts(run.info.run_id, "model_state.pt", str(tmp_path)))
    state = torch.load(state_path, weights_only=True)
    assert state["backbone.seasonal.linear.weight"].shape == (96, 336)

    code, out, _ = run_cli(["runs", "--tracking-uri", uri, "--limit", "1"], capsys)
    assert code == 0 and run.info.run_id in out and f"{m['test_crps']:.4f}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "ETTh3", "--model", "dlinear"], "unknown dataset 'ETTh3'. Did you mean 'ETTh"),
        (_train("dlinaer"), "unknown model 'dlinaer'. Did you mean 'dlinear'?"),
        (_train("dlinear", "--set", "model.individul=true"),
         "unknown config key 'model.individul'"),
        (_train("dlinear", "--set", "train.learning_rate=1"),
         "unknown config key 'train.learning_rate'. Did you mean 'train.lr'?"),
        (_train("dlinear", "--horizon", "3000"), "the val split of ETTh1 leaves no window"),
        (_train("itransformer", "--set", "data.mark_freq=fortnight"),
         "data.mark_freq 'fortnight' is not a pandas frequency"),
        (_train("flowformer", "--set", "data.time_features=maybe"),
         "data.time_features must be true or false, got 'maybe'"),
        (_train("dlinear", "--set", "model.individual=maybe"),
         "model.individual must be true or false, got 'maybe'"),
        (_train("dlinear", "--set", "train.shuffle=random"),
         "train.shuffle must be one of seed, reference, got 'random'"),
        (["train", "--dataset", "no/such/file.csv", "--model", "dlinear"], "not found"),
        # Found as a new user would (issue 26): each was a traceback or a comparison error before.
        (_train("dlinear", "--set", "model.kernel_size=0"),
         "invalid model config for 'dlinear': kernel_size must be odd and positive, got 0."),
        (_train("dlinear", "--set", "train.lr=abc"),
         "train.lr must be a number, got 'abc'."),
        (_train("dlinear", "--set", "train.batch_size=abc"),
         "train.batch_size must be an integer, got 'abc'."),
        (_train("itransformer", "--set", "model.revin=bogus"),
         "model.revin must be one of none, plain, affine, got 'bogus'."),
        # Found trying the precisions and smoke-run limits (Lightning's ModuleNotFoundError or RuntimeError before)
        (_train("dlinear", "--precision", "transformer-engine"),
         "train.precision 'transformer-engine' needs NVIDIA's transformer_engine package and a GPU"),
        (_train("dlinear", "--set", "data.num_workers=-1"),
         "data.num_workers must be >= 0, got -1."),
        (_train("dlinear", "--set", "train.gradient_clip=-1"),
         "train.gradient_clip must be >= 0, got -1."),
        (_train("iflowformer", "--set", "model.attention=full"),
         "model.attention is 'flow' for 'iflowformer', got 'full'; use -m itransformer --set model.attention=full"),
        (_train("dlinear", "--set", "train.loss=quantile", "--set", "train.quantiles=[0.5]"),
         "train.quantiles must be increasing levels in (0, 1) that include 0.5 (the point forecast) and another, "
         "like [0.1, 0.5, 0.9]; got [0.5]."),
        (_train("dlinear", "--set", "train.limit_val_batches=0"),
         "and train.limit_train_batches and train.limit_val_batches > 0."),
        (_train("dlinear", "--lr", "1e30", "--epochs", "1", "--set", "train.limit_train_batches=4"),
         "training diverged: the validation loss was not a finite number after 1 epoch, so there are no weights "
         "to keep; lower the learning rate (train.lr is 1e+30)."),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, data_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli([*argv, "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "-q"], capsys)
    assert code == 2
    assert message in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "checkpoints").exists()  # nothing to resume from is left behind (a diverged run's state)


def test_missing_file_offline_and_checksum_mismatch(real_data_dir, tmp_path, monkeypatch, capsys) -> None:
    import dataclasses

    from forecast.data import catalogue

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORECAST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FORECAST_CACHE_DIR", str(tmp_path / "cache"))
    info = catalogue.CATALOGUE["Electricity"]
    monkeypatch.setitem(catalogue.CATALOGUE, "Electricity", dataclasses.replace(info, url="http://127.0.0.1:9/x.csv"))
    code, _, err = run_cli(["train", "-d", "Electricity", "-m", "dlinear", "-q"], capsys)
    assert code == 2 and "put electricity.csv (or electricity.csv.gz) into" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ETTh1.csv").write_text("date,a\n2020-01-01,1\n")
    code, _, err = run_cli(["train", "-d", "ETTh1", "-m", "dlinear", "-q"], capsys)
    assert code == 2 and "checksum mismatch" in err and len(err.strip().splitlines()) == 1


def test_datasets_and_models_commands(data_dir, capsys) -> None:
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and "ETTh1" in out and "Traffic" in out and "12/4/4" in out
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and "dlinear" in out and "nlinear" in out and "selective scan: chunked" in out


def test_set_values_get_their_types() -> None:
    from forecast.config import parse_sets

    assert parse_sets(["train.lr=1e-5", "model.individual=true", "data.seq_len=96", "model.revin=plain"]) == {
        "train.lr": 1e-5, "model.individual": True, "data.seq_len": 96, "model.revin": "plain"}


def test_usage_errors_are_one_line(capsys) -> None:
    cases = {("runs", "--no-such-option"): "error: No such option: --no-such-option (see `forecast runs --help`)",
             ("predict", "-i", "x.csv"): "error: Missing option '--model' / '-m'. (see `forecast predict --help`)",
             ("train", "--epochs", "abc"): "error: Invalid value for '--epochs'",
             ("trian",): "error: No such command 'trian'. Did you mean 'train'?"}
    for argv, line in cases.items():
        code, out, err = run_cli(list(argv), capsys)
        assert code == 2 and err.startswith(line) and len(err.strip().splitlines()) == 1, (argv, err)
        assert "Usage:" not in err + out and "Traceback" not in err + out


def test_train_defaults_to_dlinear(capsys) -> None:
    """`forecast train --dataset ETTh1`, as the card shows it: the model is DLinear (its own key is checked)."""
    code, _, err = run_cli(["train", "--dataset", "ETTh1", "--set", "model.kernel_size=0"], capsys)
    assert code == 2 and "invalid model config for 'dlinear': kernel_size must be odd" in err


def test_option_values_found_by_a_sweep_are_one_line(data_dir, tmp_path, monkeypatch, capsys) -> None:
    """Each of these was MLflow's or Python's traceback (or, --timeout, a study that ran no trial and said so)."""
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/m.db"
    cases = {("runs", "--limit", "0", "--tracking-uri", store): "error: --limit 0 must be at least 1",
             ("train", "-d", "ETTh1", "-m", "dlinear", "--tracking-uri", "/proc/x.db"):
                 "error: the store 'sqlite:////proc/x.db' cannot be created in '/proc' (No such file or directory); "
                 "give --tracking-uri a sqlite path in a folder you can write to.",
             ("tune", "-d", "ETTh1", "-m", "dlinear", "--timeout", "-5", "--tracking-uri", store):
                 "error: --timeout -5 must be a positive number of seconds."}
    for argv, line in cases.items():
        code, out, err = run_cli(list(argv), capsys)
        assert code == 2 and err.startswith(line) and len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err + out


def test_a_store_an_older_mlflow_wrote_is_one_line_that_says_how_to_upgrade_it(tmp_path, capsys) -> None:
    """After an upgrade of MLflow, its refusal of the user's existing store was a traceback in every command."""
    import sqlite3

    db = tmp_path / "m.db"
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; "  # MLflow caches a store it
                    f"MlflowClient(tracking_uri='sqlite:///{db}').search_experiments()"],  # opened: not in this process
                   check=True, capture_output=True, timeout=120)
    with sqlite3.connect(db) as con:
        (now,) = con.execute("select version_num from alembic_version").fetchone()
        con.execute("update alembic_version set version_num = 'bda7b8c39065'")  # as an older MLflow left it
    capsys.readouterr()
    for argv in (["runs"], ["train", "-d", "ETTh1", "-m", "naive", "-H", "24", "-q"]):
        code, out, err = run_cli([*argv, "--tracking-uri", f"sqlite:///{db}"], capsys)
        assert code == 2 and out == "" and err.strip() == (
            f"error: the MLflow store was written by an older MLflow (schema bda7b8c39065; the installed MLflow reads "
            f"{now}); back it up, then run `mlflow db upgrade <its URI>` (e.g. `mlflow db upgrade "
            "sqlite:///mlflow.db`), or give another --tracking-uri."), err
