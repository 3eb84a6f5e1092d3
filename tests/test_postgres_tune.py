"""`forecast tune` workers sharing one PostgreSQL study (needs $FORECAST_TEST_POSTGRES; see tests/pg.py).

Two worker processes finish with distinct trials and the median pruner prunes the bad region from trials that
another worker finished; SIGKILL of one worker mid-trial leaves the other running, the study loadable, and the
killed worker's MLflow runs FAILED (its guard process), not RUNNING.

Budget: DLinear on ETTh1, L=96, H=24, 2 epochs of 4 batches per trial.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pg import postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # subprocesses, servers or DDP: CI runs them, `-m "not slow"` skips them

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "ETTh1", "--model", "dlinear", "--horizon", "24", "--seq-len", "96", "--epochs", "2",
        "--set", "train.limit_train_batches=4", "--set", "train.limit_val_batches=2"]
LR = {"type": "float", "low": 1.0e-7, "high": 1.0e-2, "log": True}  # below ~1e-3 nothing is learnt in 8 steps


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module, created here once (workers that start together on a new store race to
    create its tables and retry; that costs seconds); each test uses its own experiments."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def _worker(tmp_path: Path, data_dir: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cli", "tune", *args, "-q"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(uri: str, experiment: str, role: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.tune_role = '{role}'", max_results=100)


def test_two_workers_share_a_postgres_study_and_prune_across_workers(real_data_dir, postgres_url, store,  # noqa: F811
                                                                    tmp_path) -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    space = tmp_path / "space.yaml"
    space.write_text(f"search_space:\n  train.lr: {{type: float, low: {LR['low']}, high: {LR['high']}, log: true}}\n")
    # A trial another worker finished earlier (val loss 1.3 at both epochs): with --pruner-startup 1 the median
    # pruner compares every new trial against it from the first epoch on; an lr that learns nothing (~1.88) is
    # pruned whichever worker runs it.
    study = optuna.create_study(study_name="shared", storage=postgres_url, direction="minimize")
    study.add_trial(optuna.trial.create_trial(
        params={"train.lr": 5e-3}, distributions={"train.lr": FloatDistribution(LR["low"], LR["high"], log=True)},
        value=1.3, intermediate_values={0: 1.3, 1: 1.3}))
    uri = store
    args = [*TINY, "--config", str(space), "--study-name", "shared", "--storage", postgres_url, "--trials", "3",
            "--sampler", "random", "--pruner", "median", "--pruner-startup", "1", "--tracking-uri", uri,
            "--experiment", "shared"]
    workers = [_worker(tmp_path, real_data_dir, [*args, "--sampler-seed", str(seed)]) for seed in (11, 12)]
    outs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    ours = [t for t in trials if t.number > 0]
    assert sorted(t.number for t in trials) == list(range(7))  # each trial ran once
    assert {t.state.name for t in ours} <= {"COMPLETE", "PRUNED"}
    pruned = [t for t in ours if t.state.name == "PRUNED"]
    assert pruned and all(t.params["train.lr"] < 1e-3 for t in pruned), [(t.state.name, t.params) for t in ours]

    parents = _runs(uri, "shared", "study")
    children = _runs(uri, "shared", "trial")
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    assert len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {p.info.run_id for p in parents}
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    for t in ours:
        run = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        expected = {"COMPLETE": ("COMPLETE", "FINISHED"), "PRUNED": ("PRUNED", "KILLED")}[t.state.name]
        assert (run.data.tags["trial_state"], run.info.status) == expected


def test_killing_one_worker_mid_trial_leaves_the_other_and_the_study(real_data_dir, postgres_url, store,  # noqa: F811
                                                                    tmp_path) -> None:
    import optuna

    uri = store
    common = ["--study-name", "kill", "--storage", postgres_url, "--pruner", "none", "--tracking-uri", uri]
    # The victim's trials are far longer than the test (2000 epochs, no early stop) and go to their own MLflow
    # experiment, so the test sees when it is inside one and kills it there.
    victim = _worker(tmp_path, real_data_dir, [*TINY, *common, "--trials", "20", "--epochs", "2000", "--set",
                                          "train.patience=2000", "--experiment", "victim", "--sampler-seed", "1"])
    survivor = None
    try:
        deadline = time.monotonic() + 180
        while not _runs(uri, "victim", "trial"):
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "the victim never started a trial"
            time.sleep(0.3)
        (running,) = _runs(uri, "victim", "trial")
        victim_trial = int(running.data.tags["trial_number"])
        # The survivor joins while the victim is inside its trial; the kill comes as soon as the survivor's first
        # trial exists, so its later trials certainly run after the kill (however fast or slow the machine is).
        survivor = _worker(tmp_path, real_data_dir, [*TINY, *common, "--trials", "3", "--experiment", "survivor",
                                                "--sampler-seed", "2"])
        while not _runs(uri, "survivor", "trial"):
            assert survivor.poll() is None, survivor.communicate()
            assert time.monotonic() < deadline, "the survivor never started a trial"
            time.sleep(0.1)
        killed_at = dt.datetime.now()
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        alive_after_kill = survivor.poll() is None
        out = survivor.communicate(timeout=240)
        assert survivor.returncode == 0, out
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()

    study = optuna.load_study(study_name="kill", storage=postgres_url)  # still loadable
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == len(study.trials)  # distinct numbers
    assert states[victim_trial] == "RUNNING"  # Optuna's heartbeat fails it once the grace period has passed
    done = [t for t in study.trials if t.number != victim_trial]
    assert len(done) == 3 and {t.state.name for t in done} == {"COMPLETE"}
    assert alive_after_kill and any(t.datetime_complete > killed_at for t in done)  # it kept working

    (parent,) = _runs(uri, "victim", "study")
    deadline = time.monotonic() + 60  # the killed worker's guard process ends its runs
    while parent.info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
        (parent,) = _runs(uri, "victim", "study")
    (child,) = _runs(uri, "victim", "trial")
    assert parent.info.status == "FAILED" and parent.data.tags["failure"] == "owner process died"
    assert child.info.status == "FAILED" and child.data.tags["trial_state"] == "FAILED"
    (other,) = _runs(uri, "survivor", "study")
    assert other.info.status == "FINISHED" and len(_runs(uri, "survivor", "trial")) == 3
