"""`forecast benchmark` (grid, nested MLflow runs, resume, interruption) and `forecast dashboard` (files, a real
headless chromium with the network blocked, one-line errors). Tiny budgets: 1 epoch of 3 batches, L=96, H=24/48."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_cli_io

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "train.epochs=1", "--set", "train.limit_train_batches=3", "--set", "data.seq_len=96"]
GRID = ["benchmark", "--models", "dlinear,nlinear", "--datasets", "ETTh1", "--horizons", "24,48", "--name", "tiny",
        *TINY]


_cli = run_cli_io  # module-scoped fixtures have no capsys


def _data_available() -> bool:
    path = Path(os.environ.get("FORECAST_DATA_DIR", ROOT.parent / "shared" / "data"))
    return (path / "ETTh1.csv.gz").exists() or (path / "ETTh1.csv").exists()


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2x1x2 grid run twice (the second must run nothing), then the dashboard built from that store."""
    if not _data_available():
        pytest.skip("benchmark data not found")
    tmp = tmp_path_factory.mktemp("grid")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    first = _cli([*GRID, "--tracking-uri", uri, "--markdown", str(tmp / "grid.md")])
    second = _cli([*GRID, "--tracking-uri", uri])
    dash = _cli(["dashboard", "--name", "tiny", "--tracking-uri", uri, "--output", str(tmp / "dash"),
                 "--ui-url", "http://127.0.0.1:5000"])
    return {"tmp": tmp, "uri": uri, "first": first, "second": second, "dash": dash}


def _runs(uri: str, role: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("benchmark-tiny")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.benchmark_role = '{role}'",
                              order_by=["attributes.start_time ASC"])


def test_grid_finishes_with_nested_runs(grid: dict) -> None:
    code, out, err = grid["first"]
    assert code == 0, err
    assert [ln.split(":")[0] for ln in err.splitlines() if ln.startswith("cell ")] == [
        "cell 1/4 dlinear ETTh1 H=24 seed 2021", "cell 2/4 nlinear ETTh1 H=24 seed 2021",
        "cell 3/4 dlinear ETTh1 H=48 seed 2021", "cell 4/4 nlinear ETTh1 H=48 seed 2021"]
    assert "running cell 1/4 dlinear ETTh1 H=24 seed 2021" in err and "running cell 4/4 nlinear ETTh1 H=48" in err
    assert "  epoch 1/" in err and "val_loss" in err  # each cell's epochs show while it runs
    assert "ETA" in err and "benchmark tiny: 4 results (4 cells run now, 0 skipped" in out
    (parent,) = _runs(grid["uri"], "parent")[:1]
    cells = _runs(grid["uri"], "cell")
    assert len(cells) == 4 and all(r.info.status == "FINISHED" for r in cells)
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parent.info.run_id}
    assert all(r.data.tags["benchmark"] == "tiny" and len(r.data.tags["config_hash"]) == 16 for r in cells)
    assert len({r.data.tags["config_hash"] for r in cells}) == 4
    assert {(r.data.params["model.name"], r.data.params["data.horizon"]) for r in cells} == {
        ("dlinear", "24"), ("nlinear", "24"), ("dlinear", "48"), ("nlinear", "48")}
    assert parent.info.status == "FINISHED" and parent.data.metrics["cells_run"] == 4
    md = (grid["tmp"] / "grid.md").read_text()
    assert "wall time" in md and "forecast benchmark --models dlinear,nlinear" in md and md.count("| ETTh1 |") == 4


def test_second_invocation_runs_nothing_new(grid: dict) -> None:
    code, out, err = grid["second"]
    assert code == 0, err
    assert "4 of 4 cells already finished" in err and not [ln for ln in err.splitlines() if ln.startswith("cell ")]
    assert "(0 cells run now, 4 skipped as finished)" in out
    assert len(_runs(grid["uri"], "cell")) == 4  # nothing new trained
    parents = _runs(grid["uri"], "parent")
    assert len(parents) == 2 and parents[1].data.metrics["cells_skipped"] == 4
    assert parents[1].data.metrics["cells_run"] == 0


def test_collect_shows_the_finished_cells_and_trains_nothing(grid: dict, tmp_path: Path) -> None:
    import shutil

    shutil.copy(grid["tmp"] / "mlflow.db", tmp_path / "mlflow.db")  # the fixture's store stays as it was
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [*GRID[:GRID.index("--horizons")], "--horizons", "24,48,96", *GRID[GRID.index("--name"):]]
    code, out, err = _cli([*argv, "--collect", "--tracking-uri", uri, "--markdown", str(tmp_path / "t.md")])
    assert code == 0, err
    assert "benchmark tiny: 4 results (0 cells run now, 4 skipped as finished)" in out
    assert ("--collect: 2 of 6 cells not run yet: dlinear ETTh1 H=96 seed 2021, nlinear ETTh1 H=96 seed 2021 "
            "(the same command without --collect runs them).") in err
    assert "running cell" not in err and "epoch" not in err
    assert len(_runs(uri, "cell")) == 4  # nothing trained
    md = (tmp_path / "t.md").read_text()
    assert "2 not run yet (--collect: dlinear ETTh1 H=96 seed 2021, nlinear ETTh1 H=96 seed 2021)" in md
    assert md.count("| ETTh1 |") == 4
    assert "other settings" not in err
    # Without the --set flags the cells ran with, none of them matches: the summary says which flags they had.
    code, out, err = _cli([*argv[:argv.index("--set")], "--collect", "--tracking-uri", uri])
    assert code == 0, err
    assert "benchmark tiny: 0 results" in out
    assert ("--collect: benchmark 'tiny' has 4 finished cells run with other settings (--set data.seq_len=96 --set "
            "train.epochs=1 --set train.limit_train_batches=3); give the --set, --config and --data-dir") in err, err


def test_dashboard_files(grid: dict) -> None:
    code, out, err = grid["dash"]
    assert code == 0, err
    assert "leaderboard.html" in out
    dash = grid["tmp"] / "dash"
    page = (dash / "leaderboard.html").read_text()
    assert _external_refs(page) == []  # plotly's JS is inline and images are data: URIs: works offline
    assert "Plotly.newPlot" in page and 'id="leaderboard"' in page
    assert page.count('data-dataset="ETTh1"') == 4
    assert "http://127.0.0.1:5000/#/experiments/" in page and "data:image/png;base64," in page
    # coverage by horizon step: a chart per dataset, a line per model and interval level, the nominal levels drawn
    assert 'id="coverage-ETTh1"' in page and '"name":"dlinear 80%"' in page and "nominal 90%" in page
    rows = list(csv.DictReader((dash / "leaderboard.csv").open()))
    assert sorted((r["model"], r["horizon"]) for r in rows) == [("dlinear", "24"), ("dlinear", "48"),
                                                               ("nlinear", "24"), ("nlinear", "48")]
    assert all(0 < float(r["mse"]) < 3 and r["lookback"] == "96" for r in rows)
    assert (dash / "leaderboard.md").read_text().count("| ETTh1 |") == 4
    # LTSF-Linear's loader dropped the last partial test batch: beside every window, the windows it scored
    assert all(0 < float(r["mse_as_published"]) < 3 and r["mse_as_published"] != r["mse"] for r in rows)
    table = page[page.index('id="leaderboard"'):page.index("</table>", page.index('id="leaderboard"'))]
    header = table[:table.index("</thead>")]
    assert "<th class=\"\">MSE as published</th>" in header and "the official code scored" in page
    n_cols = header.count("</th>")
    assert all(row.count("</td>") == n_cols for row in table.split("<tr")[2:])  # a cell under every header


def _external_refs(page: str) -> list[str]:
    """src/href attributes of the page's tags that would load something (script bodies are not parsed as tags)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Refs(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            for name, value in attrs:
                if name == "src" and not (value or "").startswith("data:"):
                    found.append(f"{tag} src={value}")
                if name == "href" and tag == "link":
                    found.append(f"link href={value}")

    Refs().feed(page)
    return found


BAND_PIXELS = """
const tints = arguments[0];
return [...document.querySelectorAll('.card img')].map(img => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const g = canvas.getContext('2d');
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = tints.map(() => 0);
  for (let i = 0; i < px.length; i += 4) {
    tints.forEach((t, k) => {
      const near = [0, 1, 2].every(c => Math.abs(px[i + c] - t[c]) <= 3);
      if (near) counts[k]++;
    });
  }
  return counts;
});
"""


@pytest.mark.slow
def test_dashboard_in_headless_chromium_offline(grid: dict, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.screenshot import CHROMEDRIVER, CHROMIUM, offline_chromium

    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = grid["tmp"] / "dash" / "leaderboard.html"
    driver = offline_chromium(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"))
        rows = driver.find_elements(By.CSS_SELECTOR, "table#leaderboard tbody tr")
        got = sorted((r.get_attribute("data-model"), r.get_attribute("data-horizon")) for r in rows)
        assert got == [("dlinear", "24"), ("dlinear", "48"), ("nlinear", "24"), ("nlinear", "48")]
        assert len(driver.find_elements(By.CSS_SELECTOR, "table#leaderboard td.best")) >= 2
        # the plots really drew: traces in the SVG, and the base64 forecast images decoded
        assert driver.find_elements(By.CSS_SELECTOR, "#cost-chart .main-svg .scatterlayer .trace")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#coverage-ETTh1 .main-svg .scatterlayer .trace")) >= 4
        assert driver.execute_script(
            "return [...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
        # each fan chart shows its bands: tab:red (214, 39, 40) at alpha 0.12 over white is the 90% band's tint
        # (250, 229, 229); the 80% band at 0.22 on top of it is (242, 187, 188). Pixels of each, per image:
        tints = driver.execute_script(BAND_PIXELS, [[250, 229, 229], [242, 187, 188]])
        assert len(tints) == 2 and all(outer > 500 and inner > 500 for outer, inner in tints), tints
        # nothing could be fetched from the network: a probe request fails
        assert driver.execute_script(
            "var x = new XMLHttpRequest(); try { x.open('GET', 'http://example.com/', false); x.send(); "
            "return x.status; } catch (e) { return -1; }") in (-1, 0)
        shot = tmp_path / "leaderboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


@pytest.mark.slow
def test_interrupted_cell_is_killed_and_resumed(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from forecast.train import ForecastModule

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--horizons", "24,48", "--name", "ctrlc",
            *TINY, "--tracking-uri", uri]
    original = ForecastModule.training_step
    calls = {"n": 0}

    def interrupt_in_second_cell(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > 3:  # cell 1 trains 3 batches; Ctrl-C in cell 2's first batch
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ForecastModule, "training_step", interrupt_in_second_cell)
    code, out, err = run_cli(argv, capsys)
    assert code == 130 and "interrupted" in err and "1 cells left" in err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("benchmark-ctrlc")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    status = {(r.data.tags["benchmark_role"], r.data.params.get("data.horizon")): r.info.status for r in runs}
    assert status == {("parent", None): "KILLED", ("cell", "24"): "FINISHED", ("cell", "48"): "KILLED"}

    monkeypatch.setattr(ForecastModule, "training_step", original)
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "1 of 2 cells already finished" in err and "cell 2/2 dlinear ETTh1 H=48" in err
    cells = client.search_runs([exp.experiment_id], filter_string="tags.benchmark_role = 'cell'")
    assert sorted(r.info.status for r in cells) == ["FINISHED", "FINISHED", "KILLED"]


@pytest.mark.slow
def test_a_running_cell_reports_its_steps(data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A cell whose epoch takes an hour is not an hour of silence: the log gets its step, rate and time left."""
    from forecast.benchmark.progress import GridProgress

    monkeypatch.setattr(GridProgress, "step_every", property(lambda self: 0.0))  # instead of every 5 minutes
    argv = ["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--horizons", "24", "--name", "steps", *TINY,
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "  epoch 1/1: step 1/3," in err and "  epoch 1/1: step 2/3," in err and "step 3/3" not in err
    assert "s/step" in err and "of training left in this cell" in err
    assert err.index("step 2/3") < err.index("  epoch 1/1  train_loss")  # then the epoch's own line
    code, _, err = run_cli([*argv[:-2], "--tracking-uri", f"sqlite:///{tmp_path / 'q.db'}", "--quiet"], capsys)
    assert code == 0 and "step" not in err


def test_the_eta_of_the_last_cell_comes_from_its_step_rate() -> None:
    from types import SimpleNamespace

    from forecast.benchmark.progress import GridProgress
    from forecast.train import StepProgress

    cells = [SimpleNamespace(status="pending", label=f"cell {i}") for i in range(2)]
    progress = GridProgress(cells, quiet=False, stream=io.StringIO())
    assert progress.eta() == "ETA -" and progress.step_every == 300.0  # a log, not a terminal
    progress.start(cells[0])
    progress.step(cells[0], StepProgress(epoch=1, epochs=3, step=10, steps=100, seconds=20.0))
    assert progress.eta() == "ETA -"  # another cell follows, of unknown cost
    cells[0].seconds, cells[0].status, cells[0].metrics = 600.0, "done", {"test_mse": 0.4, "test_mae": 0.4}
    progress.finish(cells[0])
    progress.start(cells[1])
    assert progress.eta() == "ETA 10m00s"  # the mean of the cells run so far
    progress.step(cells[1], StepProgress(epoch=1, epochs=3, step=10, steps=100, seconds=20.0))
    assert progress.eta() == "ETA ≤9m40s training"  # the last cell: 580 s of batches at most at its own rate
    log = progress.stream.getvalue()
    assert ("epoch 1/3: step 10/100, 2.00 s/step, about 3 min of training left in this epoch, at most 9m40s of "
            "training left in this cell (then validation and test)") in log
    assert GridProgress(cells, quiet=True).step_every is None


def test_config_hash_covers_the_seed_not_the_data_location() -> None:
    from forecast.benchmark.grid import config_hash
    from forecast.resolve import resolve

    base = config_hash(resolve("dlinear", "ETTh1", {"data.horizon": 96}))
    assert base == config_hash(resolve("dlinear", "ETTh1", {"data.horizon": 96, "data.data_dir": "/elsewhere"}))
    assert base != config_hash(resolve("dlinear", "ETTh1", {"data.horizon": 96, "train.seed": 2022}))
    assert base != config_hash(resolve("dlinear", "ETTh1", {"data.horizon": 192}))
    assert base != config_hash(resolve("nlinear", "ETTh1", {"data.horizon": 96}))


def test_published_reference_file() -> None:
    from forecast.models import model_names
    from forecast.published import PUBLISHED, load_published, lookup

    table = load_published()
    assert len(table) >= 20
    assert {p.model for p in table.values()} <= set(model_names())
    it = lookup(table, "iTransformer", "etth1", 720, 96)
    assert (it.mse, it.mae) == (0.503, 0.491) and "iTransformer" in it.source
    assert lookup(table, "dlinear", "ETTh1", 96, 336).mae == 0.405
    assert math.isnan(lookup(table, "dlinear", "Weather", 96, 336).mae)  # null: the source gives none
    assert lookup(table, "dlinear", "ETTh1", 96, 96) is None  # published at L=336 only
    sys.path.insert(0, str(ROOT))
    from benchmarks import accuracy

    assert accuracy.published("dlinear", "ETTh1", 96, 336)[0] == 0.384  # accuracy.py reads the same file
    assert PUBLISHED.parent.name == "configs"


def test_published_file_takes_more_rows(tmp_path: Path) -> None:
    from forecast.errors import ForecastError
    from forecast.published import PUBLISHED, load_published

    path = tmp_path / "published.yaml"
    path.write_text(PUBLISHED.read_text() + "- {model: patchtst, dataset: ETTh1, horizon: 96, lookback: 336, "
                    "mse: 0.370, mae: 0.400, source: PatchTST paper}\n")
    assert load_published(path)[("patchtst", "etth1", 96, 336)].mae == 0.400
    path.write_text(PUBLISHED.read_text() + "- {model: dlinear, dataset: ETTh1, horizon: 96, lookback: 336, "
                    "mse: 0.1, mae: 0.2, source: duplicate}\n")
    with pytest.raises(ForecastError, match="duplicate"):
        load_published(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["benchmark", "--models", "dlinear,dlinaer", "--datasets", "ETTh1"], "unknown model 'dlinaer'"),
        (["benchmark", "--models", "dlinear", "--datasets", "ETTh1,ETTh3"], "unknown dataset 'ETTh3'"),
        (["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--horizons", "96,x"], "--horizons takes"),
        (["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--set", "train.epoch=1"],
         "unknown config key 'train.epoch'"),
        (["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--name", "a b"], "--name 'a b' must be"),
        (["dashboard"], "no MLflow store at"),
        (["ui"], "no MLflow store at"),
    ],
)
def test_bad_benchmark_input_is_one_line(argv: list[str], message: str, tmp_path: Path, monkeypatch,
                                         capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli([*argv, "--tracking-uri", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "none").exists()


def test_dashboard_empty_store_and_unknown_name(grid: dict, tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=empty).search_experiments()  # creates an empty store
    code, _, err = run_cli(["dashboard", "--tracking-uri", empty, "--output", str(tmp_path / "d")], capsys)
    assert code == 2 and err.startswith("error: no finished runs with test metrics") and err.count("\n") == 1
    code, _, err = run_cli(["dashboard", "--tracking-uri", grid["uri"], "--name", "tinny", "--output",
                            str(tmp_path / "d")], capsys)
    assert code == 2 and "no finished runs of benchmark 'tinny'" in err and "known benchmarks: tiny" in err
    assert err.count("\n") == 1 and not (tmp_path / "d").exists()
    (tmp_path / "file").write_text("")  # a file where the folder would go: no folder can be made there
    code, out, err = run_cli(["dashboard", "--tracking-uri", grid["uri"], "--output", str(tmp_path / "file" / "d")],
                             capsys)
    assert code == 2 and err.startswith("error: --output: the folder ") and "cannot be made" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_benchmark_refuses_a_markdown_path_it_cannot_write_before_any_cell(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("")
    code, _, err = run_cli([*GRID, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--markdown",
                            str(tmp_path / "file" / "t.md")], capsys)
    assert code == 2 and err.startswith("error: --markdown: the folder ") and err.count("\n") == 1, err
    assert "running cell" not in err and not (tmp_path / "m.db").exists()  # nothing trained, no store made


RESUME = ["benchmark", "--models", "itransformer", "--datasets", "ETTh1", "--horizons", "24", "--set", "train.epochs=4",
          "--set", "train.patience=10", "--set", "train.limit_train_batches=3", "--set", "model.d_model=32",
          "--set", "model.d_ff=32", "--set", "model.dropout=0.2"]


@pytest.mark.slow
def test_cell_interrupted_mid_training_resumes_at_the_next_epoch_with_the_same_result(
        data_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C in epoch 3 of 4: the same command goes on from the end of epoch 2 (weights, optimizer, early
    stopping, lr schedule and the dropout/shuffling RNG states) and ends with the test MSE of a run never stopped."""
    from mlflow.tracking import MlflowClient

    from forecast.benchmark.grid import BenchmarkOptions, plan
    from forecast.benchmark.store import cell_checkpoint_dir
    from forecast.train import ForecastModule

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [*RESUME, "--name", "mid", "--tracking-uri", uri]
    original = ForecastModule.training_step
    calls = {"n": 0}

    def interrupt_in_third_epoch(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 7:  # epochs 1 and 2 train 3 batches each
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ForecastModule, "training_step", interrupt_in_third_epoch)
    code, out, err = run_cli(argv, capsys)
    assert code == 130 and "1 cells left" in err
    (cell,) = plan(BenchmarkOptions(["itransformer"], ["ETTh1"], [24], name="mid",
                                    overrides={"train.epochs": 4, "train.patience": 10, "train.limit_train_batches": 3,
                                               "model.d_model": 32, "model.d_ff": 32, "model.dropout": 0.2}))
    ckpt_dir = cell_checkpoint_dir(uri, "mid", cell.config_hash)
    assert ckpt_dir == tmp_path / "checkpoints" / "mid" / cell.config_hash
    assert (ckpt_dir / "last.ckpt").is_file() and '"epochs_done": 2' in (ckpt_dir / "last.json").read_text()
    assert not list(ckpt_dir.glob(".*tmp"))  # written atomically
    code, _, err = run_cli([*argv, "--collect"], capsys)  # what a user sees while the cell waits to go on
    assert code == 0 and "not run yet: itransformer ETTh1 H=24 seed 2023 (checkpoint after epoch 2)" in err

    monkeypatch.setattr(ForecastModule, "training_step", original)
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "resuming after epoch 2: cell 1/1 itransformer ETTh1 H=24" in err
    assert "  epoch 3/4" in err and "  epoch 1/4" not in err  # only the epochs left were trained
    assert not (tmp_path / "checkpoints").exists()  # removed once the cell finished

    code, _, err = run_cli([*RESUME, "--name", "straight", "--tracking-uri", uri], capsys)
    assert code == 0, err
    client = MlflowClient(tracking_uri=uri)
    runs = {}
    for name in ("mid", "straight"):
        exp = client.get_experiment_by_name(f"benchmark-{name}")
        runs[name] = client.search_runs([exp.experiment_id], filter_string="tags.benchmark_role = 'cell'",
                                        order_by=["attributes.start_time ASC"])
    killed, resumed = runs["mid"]
    (straight,) = runs["straight"]
    assert (killed.info.status, resumed.info.status) == ("KILLED", "FINISHED")
    assert resumed.data.tags["resumed_after_epoch"] == "2" and "resumed_after_epoch" not in straight.data.tags
    assert resumed.data.metrics["test_mse"] == straight.data.metrics["test_mse"]
    assert resumed.data.metrics["best_val_loss"] == straight.data.metrics["best_val_loss"]
    assert resumed.data.metrics["epochs_run"] == straight.data.metrics["epochs_run"] == 4
    # the new run carries the whole per-epoch history, the earlier process's epochs included
    history = client.get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    straight_history = client.get_metric_history(straight.info.run_id, "val_loss")
    assert sorted((m.step, m.value) for m in history) == sorted((m.step, m.value) for m in straight_history)


def test_unreadable_cell_checkpoint_is_one_line(data_dir: Path, tmp_path: Path, capsys) -> None:
    from forecast.benchmark.grid import BenchmarkOptions, plan
    from forecast.benchmark.store import cell_checkpoint_dir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (cell,) = plan(BenchmarkOptions(["dlinear"], ["ETTh1"], [24], name="bad",
                                    overrides={"train.epochs": 1, "train.limit_train_batches": 3, "data.seq_len": 96}))
    ckpt_dir = cell_checkpoint_dir(uri, "bad", cell.config_hash)
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "last.ckpt").write_bytes(b"not a checkpoint")
    code, out, err = run_cli(["benchmark", "--models", "dlinear", "--datasets", "ETTh1", "--horizons", "24",
                              "--name", "bad", *TINY, "--tracking-uri", uri], capsys)
    assert code == 1
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert f"cannot resume from {ckpt_dir / 'last.ckpt'}" in line and f"delete {ckpt_dir} to start" in line
    assert "Traceback" not in err


def test_baselines_join_every_dataset_and_horizon_once() -> None:
    from forecast.benchmark.grid import BenchmarkOptions, plan

    cells = plan(BenchmarkOptions(["dlinear"], ["ETTh1", "Weather"], [24, 96], seeds=[1, 2], baselines=True,
                                  overrides={"model.individual": True, "train.epochs": 1}))
    got = sorted((c.model, c.dataset, c.horizon) for c in cells if c.model != "dlinear")
    assert got == sorted((m, d, h) for m in ("naive", "seasonal_naive") for d in ("ETTh1", "Weather")
                         for h in (24, 96))  # one each: a baseline has no seed to vary
    assert sum(c.model == "dlinear" for c in cells) == 8
    naive = next(c for c in cells if c.model == "naive")
    assert naive.cfg.train.epochs == 1  # train and data keys reach them, model keys only their own models
    assert not plan(BenchmarkOptions(["dlinear"], ["ETTh1"], [24]))[1:]


def test_a_quantile_grid_keeps_its_baselines_point_forecasts_with_conformal_intervals() -> None:
    from forecast.benchmark.grid import BenchmarkOptions, plan

    cells = plan(BenchmarkOptions(["dlinear"], ["ETTh1"], [24], baselines=True,
                                  overrides={"train.loss": "quantile", "train.quantiles": [0.1, 0.5, 0.9],
                                             "train.intervals": [0.5]}))
    by_model = {c.model: c.cfg for c in cells}
    assert by_model["dlinear"].train.model_quantiles == (0.1, 0.5, 0.9)
    for name in ("naive", "seasonal_naive"):
        cfg = by_model[name]
        # no spread head to train (the model is built with these levels), and the other train keys still reach it
        assert cfg.train.model_quantiles == () and cfg.train.intervals == (0.5,)


def test_the_cost_chart_draws_baselines_as_reference_lines() -> None:
    from forecast.benchmark.results import Row
    from forecast.dashboard.html import cost_html

    def row(model: str, mse: float, seconds: float, params: int) -> Row:
        return Row("ETTh1", 24, model, 96, 1, mse, 0.0, mse, 0.0, seconds, params, ["r"], [None], None)

    page = cost_html([row("dlinear", 0.33, 0.7, 4656), row("naive", 1.22, 0.0, 0),
                      row("seasonal_naive", 0.42, 0.0, 0)])
    assert page.count("naive H24") == 4 and page.count("seasonal_naive H24") == 2  # both panels, as lines
    assert '"name":"naive"' not in page and '"name":"dlinear"' in page  # no point at 0 s and 0 parameters


def test_the_tables_carry_crps_and_coverage() -> None:
    from forecast.benchmark.results import TABLE_HEADER, csv_table, make_row, table_cells

    recs = [{"test_mse": 0.4, "test_mae": 0.4, "n_params": 1, "run_id": r, "test_crps": c, "test_coverage_80": 0.8,
             "test_coverage_90": 0.9} for r, c in (("a", 0.42), ("b", 0.44))]
    row = make_row("ETTh1", 96, "dlinear", 336, recs, {})
    assert row.crps == pytest.approx(0.43) and row.coverage_80 == pytest.approx(0.8)
    cells = dict(zip(TABLE_HEADER, table_cells(row)))
    assert cells["CRPS"] == "0.430" and cells["cover 80/90"] == "0.80/0.90"
    header, line = csv_table([row]).splitlines()
    assert dict(zip(header.split(","), line.split(",")))["crps"] == "0.43"
    old = make_row("ETTh1", 96, "dlinear", 336, [{"test_mse": 0.4, "test_mae": 0.4, "run_id": "c"}], {})
    assert dict(zip(TABLE_HEADER, table_cells(old)))["CRPS"] == ""  # a run from before CRPS was logged
    assert dict(zip(TABLE_HEADER, table_cells(old)))["MSE as published"] == ""  # nothing dropped: blank


def test_the_tables_carry_the_as_published_mse() -> None:
    from forecast.benchmark.results import TABLE_HEADER, csv_table, make_row, table_cells

    recs = [{"test_mse": 0.40, "test_mae": 0.41, "run_id": r, "test_mse_published": p, "test_mae_published": 0.4}
            for r, p in (("a", 0.37), ("b", 0.39))]
    row = make_row("ETTh1", 96, "dlinear", 336, recs, {})
    assert dict(zip(TABLE_HEADER, table_cells(row)))["MSE as published"] == "0.380"
    header, line = csv_table([row]).splitlines()
    got = dict(zip(header.split(","), line.split(",")))
    assert got["mse_as_published"] == "0.38" and got["mae_as_published"] == "0.4" and got["mse"] == "0.4"
