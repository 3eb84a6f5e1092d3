"""kill -9 of a tuning worker or a benchmark: nothing stays RUNNING, and the next start closes what was left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLOW_CELL = ["--set", "train.epochs=3", "--set", "train.limit_train_batches=60", "--set", "model.d_model=16",
             "--set", "model.d_ff=16", "--set", "model.e_layers=1", "--set", "model.n_heads=2"]
pytestmark = pytest.mark.slow  # subprocesses killed mid-work


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def _until(check, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.1)


def test_a_killed_tuning_worker_leaves_no_running_trial(real_data_dir: Path, tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    argv = [sys.executable, "-m", "cli", "tune", "-d", "ETTh1", "-m", "itransformer", "-L", "48", "-H", "24",
            "--trials", "2", "--study-name", "k", "--storage", storage, "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "-q", *SLOW_CELL]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(real_data_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def running() -> bool:
        try:
            study = optuna.load_study(study_name="k", storage=storage)
        except KeyError:
            return False
        return any(t.state == TrialState.RUNNING and "worker" in t.user_attrs for t in study.trials)

    _until(running, proc, "a running trial")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    study = optuna.load_study(study_name="k", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]  # what a kill -9 leaves
    again = subprocess.run([*argv[:argv.index("--trials") + 1], "0", *argv[argv.index("--trials") + 2:]],
                           cwd=tmp_path, env=_env(real_data_dir), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    study = optuna.load_study(study_name="k", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # at once, not after the 180 s heartbeat


def _benchmark_in_its_first_epoch(name: str, data_dir: Path, tmp_path: Path) -> tuple[str, list[str],
                                                                                       subprocess.Popen]:
    """A one-cell `forecast benchmark` started in a subprocess, returned once its first epoch is saved."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [sys.executable, "-m", "cli", "benchmark", "--models", "itransformer", "--datasets", "ETTh1",
            "--horizons", "24", "--name", name, "--tracking-uri", uri, "-q", *SLOW_CELL]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(data_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _until(lambda: bool(list((tmp_path / "checkpoints" / name).glob("*/last.json"))), proc, "epoch 1 of the cell")
    return uri, argv, proc


def test_a_killed_benchmark_leaves_no_running_run(real_data_dir: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, _, proc = _benchmark_in_its_first_epoch("k", real_data_dir, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("benchmark-k")
    deadline = time.monotonic() + 60
    while any(r.info.status == "RUNNING" for r in client.search_runs([exp.experiment_id])):
        assert time.monotonic() < deadline, "a run of the killed benchmark stayed RUNNING"
        time.sleep(0.2)
    statuses = sorted((r.data.tags["benchmark_role"], r.info.status) for r in client.search_runs([exp.experiment_id]))
    assert statuses == [("cell", "FAILED"), ("parent", "FAILED")]


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def test_a_benchmark_killed_with_its_guard_is_closed_by_the_rerun(real_data_dir: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, argv, proc = _benchmark_in_its_first_epoch("g", real_data_dir, tmp_path)
    guards = [c for c in _children(proc.pid) if b"forecast.runguard" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(guards) == 1
    os.kill(guards[0], signal.SIGKILL)  # the guard first, as when a whole container or process tree goes
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("benchmark-g")
    left = {r.info.run_id: r.data.tags["benchmark_role"] for r in client.search_runs([exp.experiment_id])}
    time.sleep(1)
    assert sorted(left.values()) == ["cell", "parent"]
    assert all(client.get_run(i).info.status == "RUNNING" for i in left)  # nothing else will ever end them
    again = subprocess.run(argv, cwd=tmp_path, env=_env(real_data_dir), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for run_id in left:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and run.data.tags["failure"] == "owner process died; closed by a later run"
    roles = sorted((r.data.tags["benchmark_role"], r.info.status) for r in client.search_runs([exp.experiment_id])
                   if r.info.run_id not in left)
    assert roles == [("cell", "FINISHED"), ("parent", "FINISHED")]
