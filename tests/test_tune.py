"""`forecast tune`: studies that complete, resume, prune, never touch the test split, share storage between
worker processes, stop cleanly on Ctrl-C, and reject bad input with one line.

Budgets are tiny: DLinear on ETTh1 with L=96, H=24, 2 epochs of 4 batches per trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from forecast.models import model_names
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "ETTh1", "--model", "dlinear", "--horizon", "24", "--seq-len", "96", "--epochs", "2",
        "--set", "train.limit_train_batches=4", "--set", "train.limit_val_batches=2"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating one costs seconds); each test uses its own study."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, study: str, role: str | None = None) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name("ETTh1")
    filt = f"tags.study = '{study}'" + (f" and tags.tune_role = '{role}'" if role else "")
    return client.search_runs([exp.experiment_id], filter_string=filt, max_results=1000)


def _study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def test_study_completes_resumes_and_never_loads_the_test_split(data_dir, store, tmp_path, monkeypatch,
                                                                capsys) -> None:
    from forecast.data.datamodule import ForecastDataModule

    monkeypatch.chdir(tmp_path)
    requested: list[str] = []
    original = ForecastDataModule.dataset

    def spy(self, split: str):
        requested.append(split)
        return original(self, split)

    monkeypatch.setattr(ForecastDataModule, "dataset", spy)
    args = [*TINY, "--study-name", "s4", "--pruner", "none", "--tracking-uri", store]
    code, out, err = run_cli(["tune", *args, "--trials", "4"], capsys)
    assert code == 0, err
    assert "test" not in requested and "train" in requested and "val" in requested
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # the default storage, in the working directory
    study = _study(storage, "s4")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert err.count("COMPLETE") == 4  # one line per trial without a terminal
    assert "forecast tune" in out and "--retrain-best" in out and "forecast train" in out
    assert f" {study.best_params['train.lr']:.4g} " in out  # the table's lr to four significant digits, not 0.0043

    (parent,) = _runs(store, "s4", "study")
    trials = _runs(store, "s4", "trial")
    assert parent.info.run_name == "tune_s4" and parent.info.status == "FINISHED"
    assert len(trials) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert {r.data.tags["trial_state"] for r in trials} == {"COMPLETE"}
    assert {r.info.status for r in trials} == {"FINISHED"}
    child = trials[0]
    assert child.data.params["data.seq_len"] == "96" and "trial.train.lr" in child.data.params
    assert child.data.params["trial.train.lr"] == child.data.params["train.lr"]
    assert "test_mse" not in child.data.metrics
    assert [m.step for m in _client(store).get_metric_history(child.info.run_id, "val_loss")] == [0, 1]
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["best.train.lr"] == str(study.best_params["train.lr"])

    # The same command again resumes the study; --report writes the plots to the new parent run.
    code, out, err = run_cli(["tune", *args, "--trials", "2", "--report", "-q"], capsys)
    assert code == 0, err
    assert out == ""  # --quiet
    assert [t.number for t in _study(storage, "s4").trials] == [0, 1, 2, 3, 4, 5]
    parents = _runs(store, "s4", "study")
    assert len(parents) == 2
    newest = max(parents, key=lambda r: r.info.start_time)
    assert {a.path for a in _client(store).list_artifacts(newest.info.run_id)} >= {"tune_report.html", "trials.csv"}
    assert "test" not in requested

    # Only --retrain-best touches the test split: a separate run tagged as the study's result.
    code, out, err = run_cli(["tune", *args, "--trials", "0", "--retrain-best"], capsys)
    assert code == 0, err
    assert "test" in requested
    (best,) = _runs(store, "s4", "retrain_best")
    m = best.data.metrics
    assert f"test MSE {m['test_mse']:.4f}" in out and f"test CRPS {m['test_crps']:.4f}" in out, out
    assert "mlflow.parentRunId" not in best.data.tags
    assert best.data.tags["best_trial"] == str(_study(storage, "s4").best_trial.number)
    assert best.data.metrics["best_val_loss"] == _study(storage, "s4").best_value  # the trial again, to the bit
    assert 0 < best.data.metrics["test_mse"] < 2 and best.data.params["train.lr"] == str(study.best_params["train.lr"])


def test_trials_in_threads_say_their_numbers_do_not_repeat(data_dir, store, tmp_path, monkeypatch, capsys) -> None:
    """Trials in threads share torch's random state; the summary says so (and one thread's does not)."""
    monkeypatch.chdir(tmp_path)
    notice = "threads' trials shared torch's random state"
    for jobs, said in (("2", True), ("1", False)):
        code, out, err = run_cli(["tune", *TINY, "--study-name", f"threads{jobs}", "--trials", "2", "--n-jobs", jobs,
                                  "--epochs", "1", "--tracking-uri", store], capsys)
        assert code == 0, err
        assert (notice in out) is said, out


def test_bad_region_is_pruned_and_recorded_as_pruned(data_dir, store, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text("search_space:\n  train.lr: {type: float, low: 1e-6, high: 10.0, log: true}\n")
    code, _, err = run_cli(["tune", *TINY, "--config", str(space), "--study-name", "bad", "--trials", "5",
                            "--sampler", "random", "--pruner", "median", "--pruner-startup", "1",
                            "--tracking-uri", store, "-q"], capsys)
    assert code == 0, err
    study = _study(f"sqlite:///{tmp_path / 'optuna.db'}", "bad")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, [(t.state.name, t.params) for t in study.trials]
    runs = {int(r.data.tags["trial_number"]): r for r in _runs(store, "bad", "trial")}
    for t in pruned:
        run = runs[t.number]
        assert run.data.tags["trial_state"] == "PRUNED" and run.info.status == "KILLED"
        epoch = int(run.data.tags["pruned_at_epoch"])
        steps = [m.step for m in _client(store).get_metric_history(run.info.run_id, "val_loss")]
        assert epoch in steps  # the pruning epoch's val_loss is recorded too
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(runs[t.number].data.tags["trial_state"] == "COMPLETE" for t in complete)


def test_ctrl_c_fails_the_running_trial_and_keeps_the_others(data_dir, store, tmp_path, monkeypatch,
                                                             capsys) -> None:
    from forecast.train import ForecastModule

    monkeypatch.chdir(tmp_path)
    calls = {"n": 0}
    original = ForecastModule.training_step

    def interrupt_in_second_trial(self, batch, batch_idx):
        calls["n"] += 1
        if calls["n"] == 4 * 2 + 2:  # trial 0 runs 2 epochs x 4 batches; trial 1 is interrupted mid-epoch
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ForecastModule, "training_step", interrupt_in_second_trial)
    code, out, err = run_cli(["tune", *TINY, "--study-name", "ctrlc", "--pruner", "none", "--trials", "5",
                              "--tracking-uri", store, "-q"], capsys)
    assert code == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: the running trial is marked FAILED"), err
    study = _study(f"sqlite:///{tmp_path / 'optuna.db'}", "ctrlc")
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "FAIL")]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN is undone
    runs = {r.data.tags["trial_number"]: r for r in _runs(store, "ctrlc", "trial")}
    # The Optuna trial FAILED; its MLflow run was interrupted, so KILLED (as a train run or a benchmark cell is)
    assert runs["1"].data.tags["trial_state"] == "FAILED" and runs["1"].info.status == "KILLED"
    (parent,) = _runs(store, "ctrlc", "study")
    assert parent.info.status == "KILLED"


@pytest.mark.slow
def test_two_worker_processes_share_one_study(real_data_dir, store, tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORECAST_DATA_DIR": str(real_data_dir)}
    cmd = [sys.executable, "-m", "cli", "tune", *TINY, "--study-name", "shared", "--storage", storage,
           "--pruner", "none", "--trials", "2", "--tracking-uri", store, "-q"]
    workers = [subprocess.Popen([*cmd, "--sampler-seed", str(seed)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], results
    trials = _study(storage, "shared").trials
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len(_runs(store, "shared", "study")) == 2 and len(_runs(store, "shared", "trial")) == 4


@pytest.mark.parametrize(
    ("extra", "yaml_text", "message"),
    [
        ([], "search_space:\n  model.d_modl: {type: int, low: 1, high: 4}\n",
         "unknown search-space parameter 'model.d_modl'"),
        ([], "search_space:\n  train.lr: {type: float, low: 1e-3}\n", "search space 'train.lr' needs low and high"),
        ([], "search_space:\n  train.lradj: {type: categorical, choices: [type1, weekly]}\n",
         "search space 'train.lradj' value 'weekly' is not a valid config"),
        (["--storage", "sqlite:////nonexistent/dir/x.db"], None, "cannot open the Optuna storage"),
        (["--storage", "postgresql://nouser@127.0.0.1:1/x"], None, "cannot open the Optuna storage"),
        (["--pruner", "sometimes"], None, "unknown pruner 'sometimes'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(extra, yaml_text, message, data_dir, tmp_path, monkeypatch,
                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    if yaml_text:
        (tmp_path / "bad.yaml").write_text(yaml_text)
        extra = [*extra, "--config", str(tmp_path / "bad.yaml")]
    code, out, err = run_cli(["tune", *TINY, "--trials", "1", *extra,
                              "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "-q"], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not (tmp_path / "m.db").exists()  # rejected before any run or trial


def test_a_study_resumed_with_other_choices_is_one_line_before_any_trial(data_dir, store, tmp_path, monkeypatch,
                                                                         capsys) -> None:
    """Optuna cannot draw a parameter from other choices (or another kind of range) in a study that drew it
    before: every new trial failed with its ValueError (exit 1). New bounds of a range are fine."""
    monkeypatch.chdir(tmp_path)
    args = ["tune", *TINY, "--study-name", "space", "--tracking-uri", store, "-q"]
    code, _, err = run_cli([*args, "--trials", "1", "--set", "train.epochs=1"], capsys)
    assert code == 0, err
    choices = _study(f"sqlite:///{tmp_path / 'optuna.db'}", "space").trials[0].distributions["train.batch_size"].choices
    for spec, now in (("{type: categorical, choices: [8, 128]}", "choices [8, 128]"),
                      ("{type: int, low: 8, high: 64}", "an integer range")):
        (tmp_path / "space.yaml").write_text(f"search_space:\n  train.batch_size: {spec}\n")
        code, out, err = run_cli([*args, "--trials", "1", "--config", str(tmp_path / "space.yaml")], capsys)
        assert code == 2 and err.strip() == (
            f"error: study 'space' drew train.batch_size from choices {list(choices)}, and this search space gives "
            f"{now}, which Optuna cannot mix into one study; keep the study's, or pass another --study-name."), err
    assert len(_study(f"sqlite:///{tmp_path / 'optuna.db'}", "space").trials) == 1  # no trial was started


@pytest.mark.parametrize("name", model_names())
def test_every_model_search_space_is_valid(name: str) -> None:
    from forecast.resolve import resolve
    from forecast.tuning import normalize_space, validate_space

    cfg = resolve(name, "ETTh1")
    space = normalize_space(cfg.search_space, name)
    if name in ("naive", "seasonal_naive"):  # baselines: nothing to tune, and tune says so in one line
        from forecast.errors import ForecastError
        from forecast.tuning.space import tune_space

        assert space == {}
        with pytest.raises(ForecastError, match=f"{name} has no search space .*nothing to tune"):
            tune_space(cfg, {})
        return
    assert space, name
    validate_space(space, name, "ETTh1", {}, None)
