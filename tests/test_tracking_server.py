"""`forecast train`, `predict`, `runs` and `ui` against a real `mlflow server` on 127.0.0.1 with artifact proxying.

The server's backend store is a fresh PostgreSQL database when $FORECAST_TEST_POSTGRES is set (see tests/pg.py),
else a sqlite file. It is started and stopped by PID here, with bounded timeouts. The run, its artifacts, the
registered pyfunc model and the forecast all come back through the server; nothing is written beside the client.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from tests.helpers import free_port, run_cli, server_process
from tests.pg import ENV, fresh_database

pytestmark = pytest.mark.slow  # subprocesses, servers or DDP: CI runs them, `-m "not slow"` skips them

TINY = ["-d", "ETTh1", "-m", "dlinear", "--seq-len", "96", "--horizon", "24", "--epochs", "1",
        "--set", "train.limit_train_batches=3"]


@contextlib.contextmanager
def _backend(tmp_path: Path) -> Iterator[str]:
    base = os.environ.get(ENV)
    if base:
        with fresh_database(base) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict]:
    """``mlflow server`` on a free 127.0.0.1 port: {"url", "artifacts", "backend"}; stopped by its PID."""
    artifacts = tmp_path / "server-artifacts"
    with _backend(tmp_path) as backend:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "OMP_NUM_THREADS": "1"}
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
                str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with server_process(argv, f"{url}/health", tmp_path / "server.log", env, tmp_path):
            yield {"url": url, "artifacts": artifacts, "backend": backend}


def test_train_and_predict_through_an_mlflow_server(server, data_dir, tmp_path, monkeypatch, capsys) -> None:
    from mlflow.tracking import MlflowClient

    work = tmp_path / "client"
    work.mkdir()
    monkeypatch.chdir(work)
    raw = pl.read_csv(gzip.decompress((data_dir / "ETTh1.csv.gz").read_bytes()))
    raw.tail(500).write_csv(work / "history.csv")
    url = server["url"]

    code, out, err = run_cli(["train", *TINY, "--tracking-uri", url, "--register", "etth1-srv", "-q"], capsys)
    assert code == 0, err
    assert out == ""  # -q: MLflow's "View run at" lines are suppressed too
    client = MlflowClient(tracking_uri=url)
    (run,) = client.search_runs([client.get_experiment_by_name("ETTh1").experiment_id])
    assert run.info.status == "FINISHED" and 0 < run.data.metrics["test_mse"] < 2
    assert run.data.params["train.devices"] == "1" and run.data.params["dist.world_size"] == "1"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_state.pt", "scaler.json", "step_mse.csv", "forecast.png"} <= names
    # The files live in the server's artifact store and come back through it byte for byte.
    stored = [p for p in server["artifacts"].rglob("model_state.pt") if run.info.run_id in str(p)]
    assert len(stored) == 1
    fetched = client.download_artifacts(run.info.run_id, "model_state.pt", str(tmp_path))
    assert Path(fetched).read_bytes() == stored[0].read_bytes()

    outs = {}
    for model in (f"runs:/{run.info.run_id}/model", "models:/etth1-srv@champion"):
        target = work / f"fc{len(outs)}.csv"
        code, _, err = run_cli(["predict", "-m", model, "-i", "history.csv", "-o", str(target),
                                "--tracking-uri", url, "-q"], capsys)
        assert code == 0, err
        outs[model] = pl.read_csv(target)
    first, second = outs.values()
    assert first.columns == raw.columns and first.height == 24
    assert str(first["date"][0]).replace("T", " ").startswith("2018-06-26 20:00")  # after the last input row
    assert first.equals(second)

    code, out, err = run_cli(["runs", "--tracking-uri", url], capsys)
    assert code == 0 and run.info.run_id in out, err
    code, out, _ = run_cli(["ui", "--tracking-uri", url], capsys)
    assert code == 0 and "open it in a browser" in out
    assert sorted(p.name for p in work.iterdir()) == ["fc0.csv", "fc1.csv", "history.csv"]  # no local store
