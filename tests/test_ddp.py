"""DDP: `forecast train --devices 2 --strategy ddp` on the CPU (gloo) runs two real processes, records exactly one
MLflow run whose test metrics equal a single-process evaluation of its logged weights over every test window, and
a crash on either rank ends that run FAILED, never RUNNING. Plus the window shards and the config checks.

Budget: DLinear on ETTh1, L=96, H=24, 1 epoch of 4 train batches; one thread per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # subprocesses, servers or DDP: CI runs them, `-m "not slow"` skips them
ROOT = Path(__file__).resolve().parents[1]
SETS = {"data.seq_len": 96, "data.horizon": 24, "train.epochs": 1, "train.limit_train_batches": 4}
TINY = ["-d", "ETTh1", "-m", "dlinear", "--seq-len", "96", "--horizon", "24", "--epochs", "1",
        "--set", "train.limit_train_batches=4"]
DDP = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def _all_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=100) if ids else []


# -- shards ---------------------------------------------------------------------------------------------------------
def _windows(n: int):
    from forecast.data.windows import WindowDataset

    return WindowDataset(torch.zeros(n + 3, 1), None, 0, n + 3, 2, 2)  # n windows of L=2, H=2


def test_train_shards_are_disjoint_and_reshuffled_every_epoch() -> None:
    from forecast.data.windows import distributed_batch_sampler

    ds = _windows(103)
    samplers = [distributed_batch_sampler(ds, 8, rank, 2, seed=5) for rank in (0, 1)]
    orders = {}
    for epoch in (0, 1):
        shards = []
        for s in samplers:
            s.set_epoch(epoch)  # what Lightning calls on the loader's sampler before every epoch
            shards.append([i for batch in s for i in batch])
        assert len(shards[0]) == len(shards[1]) == 52  # equal batch counts on every rank
        assert len({*shards[0], *shards[1]}) == 103  # every window; one repeated to even out the shards
        orders[epoch] = shards[0]
    assert orders[0] != orders[1]
    # train.drop_last: each rank's 52 windows make 6 full batches of 8, the same count on both ranks
    dropping = [distributed_batch_sampler(ds, 8, rank, 2, seed=5, drop_last=True) for rank in (0, 1)]
    assert [[len(batch) for batch in s] for s in dropping] == [[8] * 6, [8] * 6]


@pytest.mark.parametrize("n", [1, 2, 7, 256, 2857])
@pytest.mark.parametrize("world", [2, 3])
def test_eval_shards_cover_every_window_once(n: int, world: int) -> None:
    from forecast.data.windows import eval_batch_sampler

    if n < world:
        return
    ds = _windows(n)
    seen = [i for rank in range(world) for batch in eval_batch_sampler(ds, 5, rank, world) for i in batch]
    assert seen == list(range(n))


def test_config_checks_and_compile_keeps_the_state_dict() -> None:
    from forecast.resolve import resolve
    from forecast.errors import ForecastError
    from forecast.pipeline import build

    for key, value, message in [("train.devices", 0, "train.devices must be a positive integer"),
                                ("train.devices", "auto", "train.devices must be a positive integer"),
                                ("train.num_nodes", -1, "train.num_nodes must be a positive integer"),
                                ("train.strategy", "fsdp", "train.strategy must be one of auto, ddp"),
                                ("train.precision", "bf17", "train.precision must be one of")]:
        with pytest.raises(ForecastError, match=message):
            resolve("dlinear", "ETTh1", {key: value})
    cfg = resolve("dlinear", "ETTh1", {"train.devices": 2, "train.num_nodes": 3, "train.compile": True})
    assert cfg.train.world_size == 6 and cfg.flat()["train.strategy"] == "auto"
    plain = resolve("dlinear", "ETTh1", SETS)
    compiled = resolve("dlinear", "ETTh1", {**SETS, "train.compile": True})
    keys = [list(build(c, progress=False)[1].state_dict()) for c in (plain, compiled)]
    assert keys[0] == keys[1]


def test_tune_refuses_ddp(data_dir, tmp_path, monkeypatch, capsys) -> None:
    from tests.helpers import run_cli

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["tune", *TINY, "--devices", "2", "--trials", "1", "-q"], capsys)
    assert code == 2 and "start more workers on the same --storage" in err


# -- real processes -------------------------------------------------------------------------------------------------
def test_ddp_two_cpu_processes_one_run_exact_test_metrics(real_data_dir, tmp_path) -> None:
    import lightning.pytorch as pl
    import mlflow.artifacts
    import numpy as np

    from forecast.resolve import resolve
    from forecast.pipeline import build

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-m", "cli", "train", *TINY, *DDP, "--tracking-uri", uri, "-q"],
                          cwd=tmp_path, env=_env(real_data_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout == ""  # -q, and the second rank prints nothing either
    (run,) = _all_runs(uri)  # exactly one run: rank 1 created none
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["dist.world_size"], p["train.devices"], p["train.strategy"]) == ("2", "2", "ddp")
    assert not (tmp_path / "lightning_logs").exists() and not (tmp_path / "mlruns").exists()

    # The logged weights, evaluated by one process over every test window, give the run's test metrics.
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model_state.pt",
                                                dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    state = torch.load(local, weights_only=True)
    dm, module = build(resolve("dlinear", "ETTh1", SETS), progress=False)
    module.model.load_state_dict(state)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.test(module, datamodule=dm, verbose=False)
    m = run.data.metrics
    assert m["test_windows"] == len(dm.dataset("test")) == 2881 - 24
    for key in ("test_mse", "test_mae", "test_mse_orig", "test_mae_orig"):
        assert m[key] == pytest.approx(module.test_metrics[key], rel=1e-5), key
    step = (tmp_path / "dl" / "step_mse.csv")
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="step_mse.csv",
                                        dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    logged = np.loadtxt(step, delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(logged, module.step_mse, rtol=1e-4)


CRASH = """
import os, sys
from forecast.train import ForecastModule

step = ForecastModule.training_step

def crash(self, batch, batch_idx):
    if self.global_rank == RANK and batch_idx == 1:
        HOW
    return step(self, batch, batch_idx)

ForecastModule.training_step = crash
import cli
cli.main()
"""


def test_a_crash_on_rank_1_ends_the_run_failed(real_data_dir, tmp_path) -> None:
    """Rank 0 sees gloo fail and ends the run in its finally; should Lightning's launcher SIGKILL rank 0 first
    (it does when a child exits non-zero), the guard process ends it (test_guard_... below)."""
    # Lightning's launcher runs this script again for rank 1, so the patch applies on every rank.
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH).replace("RANK", "1").replace("HOW", "raise RuntimeError('rank 1')"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, str(script), "train", *TINY, *DDP, "--tracking-uri", uri, "-q"],
                          cwd=tmp_path, env=_env(real_data_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    deadline = time.monotonic() + 60
    while True:
        runs = _all_runs(uri)
        if len(runs) == 1 and runs[0].info.status != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (run,) = runs
    assert run.info.status == "FAILED"


def test_guard_ends_a_killed_owners_run_and_its_running_children(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    owner = textwrap.dedent(f"""
        import os, signal
        from mlflow.tracking import MlflowClient
        from forecast import runguard
        c = MlflowClient("{uri}")
        exp = c.create_experiment("e")
        parent = c.create_run(exp).info.run_id
        child = c.create_run(exp, tags={{"mlflow.parentRunId": parent, "trial_state": "RUNNING"}}).info.run_id
        done = c.create_run(exp, tags={{"mlflow.parentRunId": parent}}).info.run_id
        c.set_terminated(done, "FINISHED")
        runguard.watch("{uri}", parent)
        print(parent, child, done, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", owner], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    parent, child, done = proc.stdout.split()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    deadline = time.monotonic() + 60
    while client.get_run(parent).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_run(parent).info.status == "FAILED"
    assert client.get_run(child).info.status == "FAILED"
    assert client.get_run(child).data.tags["trial_state"] == "FAILED"
    assert client.get_run(done).info.status == "FINISHED"
