"""Split-conformal against adaptive intervals on every test window, through ``forecast predict --rolling``.

Each cell (``model:dataset:horizon``; default DLinear, iTransformer, S-Mamba and OLinear on ETTh1 and DLinear and
iTransformer on Weather, all at H=96 and the configs' defaults) trains once through ``forecast.pipeline.train`` into a
temporary MLflow store; then the logged model forecasts the test split (its rows plus the L before them) with
``run_predict(rolling=True, adaptive=RATE)``, the path a user takes with ``forecast predict --rolling --adaptive``.
The static intervals' coverage is the run's own test coverage (checked here); the adaptive ones start from them and
move with each actual as it arrives. The adaptive width over the static one measures the val-to-test shift of the
residuals. Nothing is tuned on test: the rate is the default (0.05), fixed before this ran.
Results: ``benchmarks/results/intervals_adaptive.{md,json}``.

    python benchmarks/intervals_adaptive.py [--name=NAME] [dlinear:ETTh1:96 ...]   (results/intervals_adaptive_NAME)
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

CELLS = ["dlinear:ETTh1:96", "itransformer:ETTh1:96", "smamba:ETTh1:96", "olinear:ETTh1:96", "dlinear:Weather:96",
         "itransformer:Weather:96"]


def test_split_file(dataset: str, seq_len: int, out: Path) -> Path:
    """The dataset's test split with its ``seq_len`` rows of context, as a user would hand it to predict."""
    import polars as pl

    from forecast.data.catalogue import lookup
    from forecast.data.series import split_borders

    info = lookup(dataset)
    src = Path(os.environ["FORECAST_DATA_DIR"]) / f"{info.filename}.gz"
    raw = pl.read_csv(gzip.decompress(src.read_bytes()))
    start, end = split_borders(info.split, raw.height, seq_len)["test"]
    path = out / f"{dataset}-test.csv"
    raw.slice(start, end - start).write_csv(path)
    return path


def main(cells: list[str], suffix: str = "") -> None:
    from forecast.inference.predict import run_predict
    from forecast.inference.rolling import ADAPTIVE_RATE
    from forecast.pipeline import TrainOptions, train
    from forecast.resolve import resolve

    rows, found = [], []
    with tempfile.TemporaryDirectory(prefix="adaptive-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for cell in cells:
            model, dataset, horizon = cell.split(":")
            cfg = resolve(model, dataset, {"data.horizon": int(horizon)})
            t0 = time.perf_counter()
            res = train(cfg, TrainOptions(tracking_uri=uri, quiet=True))
            t1 = time.perf_counter()
            csv = test_split_file(dataset, cfg.data.seq_len, Path(tmp))
            got = run_predict(f"runs:/{res.run_id}/model", csv, rolling=True, tracking_uri=uri,
                              adaptive=ADAPTIVE_RATE).rolling.metrics
            t2 = time.perf_counter()
            m = res.metrics
            assert got["windows"] == m["test_windows"] and abs(got["coverage_80"] - m["test_coverage_80"]) < 1e-6
            found.append({"cell": cell, "train": m, "rolling": got, "train_s": t1 - t0, "rolling_s": t2 - t1})
            for name in ("80", "90"):
                rows.append([model, dataset, int(horizon), f"{name}%", got[f"coverage_{name}"],
                             got[f"adaptive_coverage_{name}"], got[f"width_{name}"], got[f"adaptive_width_{name}"],
                             got[f"adaptive_width_{name}"] / got[f"width_{name}"], got["crps"], got["adaptive_crps"],
                             f"{t2 - t1:.1f}"])
            print(cell, {k: round(v, 4) for k, v in got.items() if "coverage" in k or "crps" in k}, flush=True)
    header = ["model", "dataset", "H", "level", "cover (static)", "cover (adaptive)", "width (static)",
              "width (adaptive)", "width ratio", "CRPS (static)", "CRPS (adaptive)", "rolling s"]
    path = write_results(
        "intervals_adaptive" + (f"_{suffix}" if suffix else ""),
        "Split-conformal against adaptive intervals on every test window (predict --rolling)",
        md_table(header, rows), found,
        f"Rate {ADAPTIVE_RATE} (the default, fixed beforehand). Coverage is the share of test targets inside the "
        "interval, over every stride-1 test window, step and variate; widths are mean full widths on the standardized "
        "scale. Static: split conformal on the validation residuals (the run's test coverage). Adaptive: the same "
        "intervals scaled per level, step and variate by an online quantile tracker that reads each actual once it "
        "is observed (step j of a window at the (j + 1)-th next window). 'rolling s' is the whole predict call "
        "(forecast, both scorings).")
    print(path.read_text())


if __name__ == "__main__":
    names = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--name=")]
    main([a for a in sys.argv[1:] if not a.startswith("--name=")] or CELLS, names[0] if names else "")
