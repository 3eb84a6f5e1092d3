"""The model artifact: one owner (forecast.artifact), old artifacts still load, and every registered model makes a
round trip train -> log -> `forecast predict` and the pyfunc, on synthetic data (no benchmark files needed)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from tests.helpers import module_forecast, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "artifact_v0_1"
L, H = 24, 8
# Tiny sizes per model, so each trains one short epoch in about a second.
TINY = {"d_model": 16, "d_ff": 16, "e_layers": 1, "n_heads": 2, "d_layers": 1, "label_len": 8, "embed_size": 4,
        "d_state": 4}


@pytest.mark.parametrize("name", ["dlinear", "olinear"])
def test_an_artifact_written_by_0_1_0_predicts_the_same_forecast(name: str, tmp_path: Path, capsys) -> None:
    """Fixtures written by forecast 0.1.0 before the redesign (its run-root copy of Q is gone, its
    orthotrans_q.npz is ignored): `forecast predict` and MLflow's pyfunc loader give the forecast it gave."""
    import mlflow.pyfunc

    model_dir = FIXTURES / name
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", str(model_dir), "-i", str(FIXTURES / "history.csv"), "-o", str(out),
                            "-q"], capsys)
    assert code == 0, err
    expected = pl.read_csv(model_dir / "expected.csv")
    got = pl.read_csv(out)
    assert got.columns == expected.columns and got["date"].to_list() == expected["date"].to_list()
    # expected.csv was written on an Intel Xeon; another CPU's float32 kernels (AVX-512 on an AMD EPYC) move the last
    # bits (about 4e-8 relative), a wrong basis or scaler moves the forecast by far more
    np.testing.assert_allclose(got.drop("date").to_numpy(), expected.drop("date").to_numpy(), rtol=1e-6, atol=1e-6)
    # The pyfunc of 0.1.0 imports forecast.serving.ForecastPyfunc from its own logged code file and reads the history
    # with pandas; on this AMD EPYC its forecast and predict's differ in the same last float32 bits (on the Intel
    # Xeon that wrote expected.csv they agreed to 1e-12)
    history = pd.read_csv(FIXTURES / "history.csv")
    served = mlflow.pyfunc.load_model(str(model_dir)).predict(history)
    np.testing.assert_allclose(served.drop(columns="date").to_numpy(), expected.drop("date").to_numpy(), rtol=1e-6,
                               atol=1e-6)


def _synthetic_csv(path: Path, n: int = 480) -> Path:
    """Three hourly series with daily and weekly cycles: enough for the 70/10/20 split at L=24, H=8."""
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-03", periods=n, freq="h"),
                          "load": 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.3 * rng.standard_normal(n),
                          "temp": 5 + 2 * np.cos(2 * np.pi * t / 168) + 0.2 * rng.standard_normal(n),
                          "OT": 20 + np.sin(2 * np.pi * t / 24 + 1) + t / n})
    frame.to_csv(path, index=False)
    return path


def _model_names() -> list[str]:
    from forecast.models import model_names

    return model_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", _model_names())
def test_every_model_round_trips_through_predict_and_the_pyfunc(name: str, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """Train one short epoch, then the logged model alone (predict from runs:/, and the pyfunc) gives the
    LightningModule's own forecast of the same window: OLinear's bases come back from the state dict, Flowformer's
    decoder gets the horizon's calendar marks."""
    import dataclasses

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    from forecast import tracking
    from forecast.models import get_spec
    from forecast.pipeline import build
    from forecast.resolve import resolve

    monkeypatch.chdir(tmp_path)
    csv = _synthetic_csv(tmp_path / "toy.csv")
    fields = {f.name for f in dataclasses.fields(get_spec(name).config_cls)} - set(get_spec(name).preset)
    sets = {f"model.{k}": v for k, v in TINY.items() if k in fields}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    code, _, err = run_cli(["train", "-d", str(csv), "-m", name, "-L", str(L), "-H", str(H), "--epochs", "1",
                            "--set", "train.limit_train_batches=2", *flags, "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    run_id = run.info.run_id

    # The module's own forecast after the last L rows, from the run's weights.
    cfg = resolve(name, str(csv), {"data.seq_len": L, "data.horizon": H, **sets})
    dm, module = build(cfg, progress=False)
    state = torch.load(client.download_artifacts(run_id, "model_state.pt", str(tmp_path)), weights_only=True)
    module.model.load_state_dict(state)
    want = module_forecast(module, dm.series, L, H)

    history = pd.read_csv(csv).tail(L + 5)
    history.to_csv(tmp_path / "history.csv", index=False)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", f"runs:/{run_id}/model", "-i", str(tmp_path / "history.csv"), "-o",
                            str(out), "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    got = pl.read_csv(out)
    assert got.columns == ["date", "load", "temp", "OT"] and got.height == H
    np.testing.assert_allclose(got.drop("date").to_numpy(), want, rtol=1e-5, atol=1e-6)
    with tracking.fluent_store(uri):
        served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(history)
    np.testing.assert_allclose(served.drop(columns="date").to_numpy(), want, rtol=1e-5, atol=1e-6)
    # Each thing once in the model: the data-derived tensors live in the state dict only; the one .npz is the
    # conformal half-widths.
    local = Path(client.download_artifacts(run_id, "model", str(tmp_path / "model")))
    assert [p.name for p in local.rglob("*.npz")] == ["intervals.npz"] and not list(local.rglob("*.npy"))
    # Conformal intervals: the point forecast -/+ the stored half-width (x std), in predict and in the pyfunc.
    with np.load(next(local.rglob("intervals.npz"))) as f:
        levels, widths = f["levels"], f["widths"]
    # train.intervals (0.8, 0.9) and the CRPS levels, sorted and nested: a wider level is never narrower
    assert levels.tolist() == [0.2, 0.4, 0.6, 0.8, 0.9] and widths.shape == (5, H, 3)
    assert (np.diff(widths, axis=0) >= 0).all()
    code, _, err = run_cli(["predict", "-m", f"runs:/{run_id}/model", "-i", str(tmp_path / "history.csv"), "-o",
                            str(out), "--level", "80", "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    got = pl.read_csv(out)
    std = np.asarray(pd.read_csv(csv)[["load", "temp", "OT"]].head(int(len(pd.read_csv(csv)) * 0.7)).std(ddof=0))
    for j, col in enumerate(["load", "temp", "OT"]):
        np.testing.assert_allclose(got[f"{col}_hi80"] - got[col], widths[3, :, j] * std[j], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[col] - got[f"{col}_lo80"], widths[3, :, j] * std[j], rtol=1e-4, atol=1e-6)
    with tracking.fluent_store(uri):
        banded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(history, params={"level": "80"})
    np.testing.assert_allclose(banded["OT_lo80"].to_numpy(), got["OT_lo80"].to_numpy(), rtol=1e-6)
    assert run.data.metrics["test_coverage_80"] >= 0 and "test_width_90_orig" in run.data.metrics
    assert run.data.metrics["test_crps"] >= 0 and run.data.metrics["test_crps_orig"] >= 0
    assert len(list(local.rglob("model_state.pt"))) == 1
    # A model holds data only: MLflow loads it with the installed package's loader, no code file travels in it.
    assert not list(local.rglob("*.py")) and not list(local.rglob("*.pkl"))
    assert "loader_module: forecast.inference.serving" in (local / "MLmodel").read_text()


def test_logging_the_model_skips_mlflows_requirement_scan_and_keeps_the_pins(tmp_path: Path, monkeypatch,
                                                                             capsys) -> None:
    """The pyfunc's requirements are pinned from the installed versions, so MLflow's comparison of them with every
    installed distribution (a scan of all of them, about half a second a run) is skipped while the model is logged,
    and only then: the model still carries the pins, and MLflow's check is back afterwards."""
    from importlib.metadata import version

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient
    from mlflow.utils import environment, requirements_utils

    from forecast import tracking

    if not hasattr(environment, tracking.REQUIREMENT_CHECK):
        pytest.skip("this MLflow logs without that check: nothing to skip")
    checks = (getattr(environment, tracking.REQUIREMENT_CHECK), getattr(mlflow.pyfunc, tracking.REQUIREMENT_CHECK))
    scans = []
    real = requirements_utils.importlib_metadata.packages_distributions
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # as in a new process: no map yet
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions",
                        lambda: (scans.append(1), real())[1])
    monkeypatch.chdir(tmp_path)
    csv = _synthetic_csv(tmp_path / "toy.csv")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = run_cli(["train", "-d", str(csv), "-m", "dlinear", "-L", str(L), "-H", str(H), "--epochs", "1",
                            "--tracking-uri", uri, "-q"], capsys)
    assert code == 0, err
    assert scans == []
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    local = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "model")))
    pins = (local / "requirements.txt").read_text().split()
    for dist in ("mlflow", "torch", "numpy", "pandas", "polars"):
        assert f"{dist}=={version(dist).split('+')[0]}" in pins
    assert (getattr(environment, tracking.REQUIREMENT_CHECK), getattr(mlflow.pyfunc, tracking.REQUIREMENT_CHECK)) \
        == checks
    requirements_utils.warn_dependency_requirement_mismatches(["torch==0.0.1"])  # MLflow's own, outside the block
    assert scans == [1]


def test_requirement_check_blocks_in_threads_leave_mlflows_check_in_place() -> None:
    """Two threads logging models at once (tuning's n_jobs) take turns in the block. Were the second let in while the
    first is inside and let out after it, it would restore the first one's no-op as MLflow's check for good."""
    import threading

    import mlflow.pyfunc
    from mlflow.utils import environment

    from forecast import tracking

    before = [getattr(m, tracking.REQUIREMENT_CHECK, None) for m in (environment, mlflow.pyfunc)]
    a_inside, b_inside, release_a, release_b = (threading.Event() for _ in range(4))

    def block(inside: threading.Event, release: threading.Event) -> None:
        with tracking.pinned_requirements():
            inside.set()
            release.wait(5)

    a = threading.Thread(target=block, args=(a_inside, release_a))
    a.start()
    assert a_inside.wait(5)
    b = threading.Thread(target=block, args=(b_inside, release_b))
    b.start()
    assert not b_inside.wait(0.5)  # it waits for the first block to end
    release_a.set()
    a.join(5)
    assert b_inside.wait(5)
    release_b.set()
    b.join(5)
    assert [getattr(m, tracking.REQUIREMENT_CHECK, None) for m in (environment, mlflow.pyfunc)] == before


def _edit_meta(model_dir: Path, **fields: object) -> None:
    import json

    path = model_dir / "artifacts" / "forecast_model.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _halve_state(model_dir: Path) -> None:
    path = model_dir / "artifacts" / "model_state.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_state(model_dir: Path) -> None:
    path = model_dir / "artifacts" / "model_state.pt"
    state = torch.load(path, weights_only=True)
    key = next(iter(state))
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, path)


def _scale_basis(model_dir: Path) -> None:
    path = model_dir / "artifacts" / "model_state.pt"
    state = torch.load(path, weights_only=True)
    state["backbone.ortho.q_in"] = 2 * state["backbone.ortho.q_in"]
    torch.save(state, path)


DAMAGED = {
    "huge horizon": (lambda d: _edit_meta(d, horizon=10_000_000), r"horizon must be an integer in 1\.\.100000"),
    "negative sizes": (lambda d: _edit_meta(d, seq_len=-5, horizon=0), r"seq_len must be an integer in 1\.\."),
    "text size": (lambda d: _edit_meta(d, seq_len="ninety-six"), r"seq_len must be an integer .* 'ninety-six'"),
    "horizon that the weights lack": (lambda d: _edit_meta(d, horizon=20_000),
                                      r"do not fit a dlinear with L=48, H=20000, .* is \[24, 48\] in the state dict"),
    "state dict cut in half": (_halve_state, r"model_state\.pt is not a readable state dict"),
    "no state dict": (lambda d: (d / "artifacts" / "model_state.pt").unlink(), r"has no state file"),
    "NaN weights": (_nan_state, r"hold NaN or inf values"),
    "a column too few": (lambda d: _edit_meta(d, columns=["HUFL", "HULL"]), r"mean must be 2 finite numbers"),
    "duplicated columns": (lambda d: _edit_meta(d, columns=["OT"] * 7), r"columns must be distinct names"),
    "a newer format": (lambda d: _edit_meta(d, format=99), r"has format 99, newer than this forecast understands"),
    "a bad frequency": (lambda d: _edit_meta(d, freq="fortnightly-ish"), r"freq must be a pandas frequency"),
    "std of zero": (lambda d: _edit_meta(d, std=[0.0] * 7), r"std must be positive"),
    "OLinear's basis not orthogonal": (_scale_basis, r"do not build a olinear: OrthoTrans q_in is not orthogonal"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_or_edited_artifact_is_one_line(case: str, tmp_path: Path, capsys) -> None:
    """Every field of the description is checked against its type and range, and against the weights' shapes on a
    skeleton that allocates nothing, before the model is built: one line that names the field, exit 2, no file."""
    import shutil

    damage, message = DAMAGED[case]
    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / ("olinear" if case.startswith("OLinear") else "dlinear"), model_dir)
    damage(model_dir)
    out = tmp_path / "fc.csv"
    code, stdout, err = run_cli(["predict", "-m", str(model_dir), "-i", str(FIXTURES / "history.csv"), "-o", str(out)],
                                capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in stdout + err and not out.exists()


def test_a_model_saved_in_bfloat16_predicts(tmp_path: Path, capsys) -> None:
    """A bf16-true run saves its weights, OLinear's orthogonal bases among them, in bfloat16: the rounding moves
    ``Q Q^T`` off the identity by more than a float32 basis may be (0.004 here), but within bfloat16's own error,
    so predict builds the model and forecasts what the float32 weights forecast, to bfloat16's precision."""
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(FIXTURES / "olinear", model_dir)
    path = model_dir / "artifacts" / "model_state.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in torch.load(path, weights_only=True).items()}, path)
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", str(model_dir), "-i", str(FIXTURES / "history.csv"), "-o", str(out),
                            "-q"], capsys)
    assert code == 0, err
    expected = pl.read_csv(FIXTURES / "olinear" / "expected.csv").drop("date").to_numpy()
    got = pl.read_csv(out).drop("date").to_numpy()
    assert not np.array_equal(got, expected)
    np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.05 * np.abs(expected).mean())


def test_the_pyfunc_reads_only_the_rows_it_needs_and_bounds_a_request() -> None:
    """A long history costs what a short one does (only the last L rows are converted and checked), and a
    request past MAX_ROWS is one line (HTTP 400 when served) instead of a worker spending its memory on it."""
    from forecast import artifact
    from forecast.inference.serving import MAX_ROWS, Forecaster, RequestError

    model = Forecaster(artifact.load(artifact.artifact_paths(FIXTURES / "dlinear")))
    short = pd.read_csv(FIXTURES / "history.csv")
    n = 50_000
    dates = pd.date_range(end=pd.Timestamp(short["date"].iloc[-1]), periods=n, freq="h")
    values = {c: np.concatenate([np.zeros(n - len(short)), short[c].to_numpy()]) for c in short.columns[1:]}
    long = pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S"), **values})
    pd.testing.assert_frame_equal(model.predict(long), model.predict(short))
    too_long = pd.concat([long] * (MAX_ROWS // n + 1), ignore_index=True)
    with pytest.raises(RequestError, match=rf"^the request has {len(too_long):,} rows; send at most {MAX_ROWS:,} "):
        model.predict(too_long)
