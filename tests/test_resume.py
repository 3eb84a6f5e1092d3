"""`forecast train` interrupted (Ctrl-C, SIGTERM) or killed (kill -9): the run never stays RUNNING, and the same
command goes on from the last finished epoch with the result an uninterrupted run gives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["-d", "ETTh1", "-m", "itransformer", "-L", "48", "-H", "24", "--epochs", "3", "--set", "train.patience=10",
        "--set", "train.limit_train_batches=3", "--set", "model.d_model=16", "--set", "model.d_ff=16",
        "--set", "model.e_layers=1", "--set", "model.n_heads=2", "--set", "model.dropout=0.2"]


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name("ETTh1").experiment_id],
                              order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_resumes_with_the_same_result(data_dir: Path, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    from forecast.train import ForecastModule

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    original = ForecastModule.training_step
    calls = {"n": 0}

    def interrupt_in_second_epoch(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1 trains 3 batches
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ForecastModule, "training_step", interrupt_in_second_epoch)
    code, _, err = run_cli(["train", *ARGS, "--tracking-uri", uri], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1] == ("interrupted: the run is marked KILLED; the same command goes on after "
                                            "epoch 1 (--fresh starts over).")
    (killed,) = _runs(uri)
    assert killed.info.status == "KILLED"

    monkeypatch.setattr(ForecastModule, "training_step", original)
    code, _, err = run_cli(["train", *ARGS, "--tracking-uri", uri], capsys)
    assert code == 0, err
    assert "resuming after epoch 1 from" in err and "epoch 1/3" not in err and "epoch 2/3" in err
    assert not (tmp_path / "checkpoints").exists()  # removed once the run finished

    code, _, err = run_cli(["train", *ARGS, "--tracking-uri", f"sqlite:///{tmp_path / 'straight.db'}", "-q"], capsys)
    assert code == 0, err
    _, resumed = _runs(uri)
    (straight,) = _runs(f"sqlite:///{tmp_path / 'straight.db'}")
    assert resumed.info.status == "FINISHED" and resumed.data.tags["resumed_after_epoch"] == "1"
    for key in ("test_mse", "test_mae", "best_val_loss", "epochs_run"):
        assert resumed.data.metrics[key] == straight.data.metrics[key], key


@pytest.mark.slow
def test_fresh_starts_over(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from forecast.commands.train import checkpoint_dir
    from forecast.resolve import resolve

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = resolve("itransformer", "ETTh1", {"data.seq_len": 48, "data.horizon": 24, "train.epochs": 3,
                                            "train.patience": 10, "train.limit_train_batches": 3,
                                            "model.d_model": 16, "model.d_ff": 16, "model.e_layers": 1,
                                            "model.n_heads": 2, "model.dropout": 0.2})
    stale = checkpoint_dir(uri, cfg)
    stale.mkdir(parents=True)
    (stale / "last.ckpt").write_bytes(b"not a checkpoint")
    (stale / "last.json").write_text('{"epochs_done": 2}')
    code, _, err = run_cli(["train", *ARGS, "--tracking-uri", uri, "-q"], capsys)
    assert code == 2 and "cannot resume from" in err and "not a readable checkpoint" in err, err
    code, _, err = run_cli(["train", *ARGS, "--fresh", "--tracking-uri", uri], capsys)
    assert code == 0, err
    assert "resuming" not in err and "epoch 1/3" in err and not stale.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status", "exit_code"), [(signal.SIGKILL, "FAILED", -9),
                                                          (signal.SIGTERM, "KILLED", 130)])
def test_a_killed_train_never_stays_running_and_resumes(sig: int, status: str, exit_code: int, real_data_dir: Path,
                                                         tmp_path: Path) -> None:
    """kill -9 during epoch 2: the guard process ends the run FAILED; SIGTERM: the run ends KILLED, exit 130. Either
    way the same command resumes after epoch 1."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": str(real_data_dir), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cli", "train", *ARGS, "--set", "train.limit_train_batches=60",
            "--tracking-uri", uri, "-q"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "checkpoints" / "_train"
    deadline = time.monotonic() + 240
    while not list(ckpts.glob("*/last.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "epoch 1 never finished"
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_code, err[-2000:]
    deadline = time.monotonic() + 60
    while _runs(uri)[0].info.status == "RUNNING":  # the guard notices its owner's death within moments
        assert time.monotonic() < deadline, "the killed run stayed RUNNING"
        time.sleep(0.2)
    assert _runs(uri)[0].info.status == status
    if sig == signal.SIGTERM:
        assert err.strip().splitlines()[-1].startswith("interrupted: the run is marked KILLED; the same command goes")
    again = subprocess.run(argv[:-1], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after epoch" in again.stderr
    assert _runs(uri)[-1].info.status == "FINISHED"
