"""Several processes starting together on a store that does not exist yet: each gets it, none races on its tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 5

MLFLOW_WORKER = """
import sys
from forecast import tracking
uri, n = sys.argv[1], sys.argv[2]
mlf = tracking.client(uri)
run = mlf.create_run(tracking.experiment_id(mlf, f"exp{n}", uri))
mlf.set_terminated(run.info.run_id)
print("ok")
"""
OPTUNA_WORKER = """
import sys
import optuna
from forecast.tuning.storage import open_storage
storage = open_storage(sys.argv[1])
study = optuna.create_study(storage=storage, study_name=f"s{sys.argv[2]}")
study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("worker", [MLFLOW_WORKER, OPTUNA_WORKER], ids=["mlflow", "optuna"])
def test_workers_on_a_new_sqlite_file_all_succeed(worker: str, tmp_path: Path) -> None:
    """Without the creation lock two of five MLflow workers died with `duplicate column name: step` or `table ...
    already exists` (MLflow's migrations running twice at once)."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", worker, uri, str(i)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(WORKERS)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip().endswith("ok"), err[-2000:]


def test_a_later_run_closes_the_runs_of_dead_owners_on_this_host(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    from forecast import runguard, tracking
    from forecast.process import owner

    uri = tracking.sqlite_url(tmp_path / "mlflow.db")
    mlf = tracking.client(uri)
    exp = mlf.create_experiment("e")
    host = socket.gethostname()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owners = {"dead": f"{host}:{dead}", "alive": f"{host}:{sleeper.pid}", "other host": "elsewhere:1",
                  "this process": owner(), "no owner": None}
        ids = {}
        for name, who in owners.items():
            tags = {tracking.OWNER_TAG: who} if who else {}
            ids[name] = mlf.create_run(exp, tags=tags).info.run_id
        child = mlf.create_run(exp, tags={"mlflow.parentRunId": ids["dead"]}).info.run_id
        ended = runguard.close_orphans(mlf, exp)
        assert sorted(ended) == sorted([ids["dead"], child])
        for name, run_id in ids.items():
            run = mlf.get_run(run_id)
            assert run.info.status == ("FAILED" if name == "dead" else "RUNNING"), name
        assert mlf.get_run(child).info.status == "FAILED"
        assert mlf.get_run(ids["dead"]).data.tags["failure"] == "owner process died; closed by a later run"
        assert runguard.close_orphans(mlf, exp) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def _schema(db: Path) -> tuple:
    """A store's tables with their columns, and its migration: what MLflow checks and uses (the order in which a
    migration rewrote a table's constraints is left out: it follows Python's set order)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        tables = [t for (t,) in con.execute("select name from sqlite_master where type = 'table' order by name")]
        columns = {t: con.execute(f"pragma table_info('{t}')").fetchall() for t in tables}
        indexes = sorted(con.execute("select name, tbl_name from sqlite_master where type = 'index'").fetchall())
        return columns, indexes, con.execute("select * from alembic_version").fetchall()
    finally:
        con.close()


def _default_experiment(db: Path) -> tuple:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("select experiment_id, name, artifact_location from experiments").fetchall()
    finally:
        con.close()


def test_new_stores_start_from_one_schema_template_made_once(tmp_path, monkeypatch) -> None:
    """A new local store is a copy of the empty store at this MLflow's schema, migrated once per MLflow version:
    the same tables, columns and migration as a store MLflow creates itself, its Default experiment where MLflow
    would put it, and it records runs."""
    import mlflow.store.db.utils as db_utils
    from mlflow import MlflowClient

    from forecast import tracking

    monkeypatch.setenv("FORECAST_CACHE_DIR", str(tmp_path / "cache"))
    created = []
    real = db_utils._initialize_tables
    monkeypatch.setattr(db_utils, "_initialize_tables", lambda engine: (created.append(str(engine.url)), real(engine)))
    stores = {}
    for name in ("a", "b", "mlflow"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        stores[name] = tmp_path / name / "m.db"
        uri = tracking.sqlite_url(stores[name])
        mlf = MlflowClient(uri) if name == "mlflow" else tracking.client(uri)
        run = mlf.create_run(tracking.experiment_id(mlf, "e", uri))
        mlf.log_metric(run.info.run_id, "loss", 0.5)
        assert mlf.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    template = tmp_path / "cache" / "mlflow" / f"schema-{mlflow.__version__}.db"
    assert len(created) == 2 and str(template.parent) in created[0]  # the template, then MLflow's own store
    assert _schema(stores["a"]) == _schema(stores["b"]) == _schema(stores["mlflow"])
    for name, db in stores.items():
        assert _default_experiment(db)[0] == (0, "Default", str(tmp_path / name / "mlruns" / "0"))
    assert _default_experiment(template) == []  # no rows: each copy gets its own Default experiment


def test_without_a_cache_to_keep_the_template_mlflow_creates_the_store(tmp_path, monkeypatch) -> None:
    from forecast import tracking

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("FORECAST_CACHE_DIR", str(blocked))
    assert tracking.schema_template() is None
    uri = tracking.sqlite_url(tmp_path / "m.db")
    mlf = tracking.client(uri)
    assert mlf.create_experiment("e") and (tmp_path / "m.db").is_file()
