"""Latency of `forecast predict` for one window (model loading vs the forecast) and `--rolling` throughput.

For DLinear and iTransformer (their ETTh1 H=96 defaults), a throwaway model is trained first (1 epoch of a few
batches: accuracy is irrelevant here) into a temporary sqlite store. Then, from its ``runs:/ID/model`` artifact:

- **load**: fetch the artifact from the store, read its metadata, rebuild the network, load the state dict;
- **forecast**: read the 500-row input CSV, validate it, forecast the next H steps, write the CSV atomically;
- **cli**: the whole ``forecast predict`` command in a fresh process (Python and torch imports included);
- **rolling**: ``--rolling`` over ETTh1's test split (every stride-1 window, metrics against the actuals,
  no output file), in windows per second of the forecast step (loading excluded).

In-process figures are medians of ``--repeats`` runs after one warm-up. Usage:
``python benchmarks/predict_latency.py [--repeats 10] [--models dlinear itransformer]``
Results: ``benchmarks/results/predict_latency.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks._common

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEST_SPLIT = (16 * 720, 20 * 720)  # ETTh1 test rows, before the L rows of context


def environment() -> dict[str, Any]:
    import mlflow
    import torch

    import forecast

    from benchmarks._common import cpu_model

    cpu = cpu_model()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.platform()}, {cpu}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "mlflow": mlflow.__version__,
                     "forecast": forecast.__version__},
    }


def train_tiny(model: str, uri: str, data_dir: str) -> tuple[str, int, int]:
    """(run id, L, H) of a 1-epoch, 5-batch model with the paper's ETTh1 architecture for H=96."""
    from forecast.resolve import resolve
    from forecast.pipeline import TrainOptions, train

    cfg = resolve(model, "ETTh1", {"data.horizon": 96, "data.data_dir": data_dir, "train.epochs": 1,
                                   "train.limit_train_batches": 5, "train.limit_val_batches": 2})
    result = train(cfg, TrainOptions(tracking_uri=uri, quiet=True, experiment="predict-latency"))
    return result.run_id, cfg.data.seq_len, cfg.data.horizon


def median_timings(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    runs = [fn() for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def bench_model(model: str, uri: str, data_dir: str, work: Path, repeats: int) -> dict[str, Any]:
    import polars as pl

    from forecast.inference.predict import run_predict, single_thread

    t0 = time.perf_counter()
    run_id, L, H = train_tiny(model, uri, data_dir)
    train_s = time.perf_counter() - t0
    raw = pl.read_csv(gzip.decompress((Path(data_dir) / "ETTh1.csv.gz").read_bytes()))
    hist, test = work / "history.csv", work / "test_split.csv"
    raw.tail(500).write_csv(hist)
    raw.slice(TEST_SPLIT[0] - L, TEST_SPLIT[1] - TEST_SPLIT[0] + L).write_csv(test)
    model_uri = f"runs:/{run_id}/model"

    def one() -> dict[str, float]:
        res = run_predict(model_uri, hist, work / "forecast.csv", tracking_uri=uri)
        return {k: res.timings[k] * 1000 for k in ("load", "fetch", "build", "forecast", "validate", "run")}

    single = median_timings(one, repeats)

    def rolling() -> dict[str, float]:
        res = run_predict(model_uri, test, None, rolling=True, tracking_uri=uri)
        return {"seconds": res.timings["run"], "windows": float(res.rolling.windows),
                "mse": res.rolling.metrics["mse"]}

    roll = median_timings(rolling, max(3, repeats // 3))
    with single_thread():
        roll_1 = median_timings(rolling, max(3, repeats // 3))
    cli = []
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cli; cli.main()", "predict", "-m", model_uri, "-i", str(hist),
                        "-o", str(work / "cli.csv"), "-q"], cwd=ROOT, env=env, check=True, capture_output=True)
        cli.append(time.perf_counter() - t)
    return {"model": model, "L": L, "H": H, "train_seconds": round(train_s, 1), "one_window_ms": single,
            "cli_seconds": statistics.median(cli), "rolling_windows": int(roll["windows"]),
            "rolling_seconds": roll["seconds"], "rolling_windows_per_s": roll["windows"] / roll["seconds"],
            "rolling_1_thread_seconds": roll_1["seconds"],
            "rolling_1_thread_windows_per_s": roll_1["windows"] / roll_1["seconds"], "rolling_mse": roll["mse"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["dlinear", "itransformer"])
    ap.add_argument("--data-dir", default=os.environ.get("FORECAST_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    data_dir = str(Path(args.data_dir).resolve())
    load_start = [round(v, 2) for v in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="predict-latency-") as tmp:
        work = Path(tmp)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.chdir(work)  # the run store and nothing else lands here
        for model in args.models:
            rows.append(bench_model(model, uri, data_dir, work, args.repeats))
            print(json.dumps(rows[-1], default=float), flush=True)
    env = environment()
    env["load_average_start"] = load_start
    threads = env["machine"].rsplit("torch threads ", 1)[-1]
    table = ["| model | L | H | load (ms) | of which fetch | forecast (ms) | of which model | `forecast predict` "
             f"process (s) | rolling windows | rolling (s), {threads} threads | windows/s | windows/s, 1 thread |",
             "|" + "---|" * 12]
    for r in rows:
        w = r["one_window_ms"]
        table.append(f"| {r['model']} | {r['L']} | {r['H']} | {w['load']:.1f} | {w['fetch']:.1f} | "
                     f"{w['forecast']:.1f} | {w['run']:.1f} | {r['cli_seconds']:.2f} | {r['rolling_windows']:,} | "
                     f"{r['rolling_seconds']:.2f} | {r['rolling_windows_per_s']:,.0f} | "
                     f"{r['rolling_1_thread_windows_per_s']:,.0f} |")
    notes = """- load = fetch the `runs:/ID/model` artifact from the sqlite store into a temp dir + read its metadata +
  rebuild the network + `torch.load(weights_only=True)`; forecast = read the 500-row CSV + validate + forecast H
  steps + write the CSV atomically (of which model = the network call, scaling and writing). Medians after a
  warm-up, in one process.
- `forecast predict` process = the whole command in a fresh Python process (imports of torch, polars and mlflow
  included), median of 3.
- rolling = `--rolling` over ETTh1's test split with its L rows of context: a forecast from every stride-1
  window (the last H of them run past the data), MSE/MAE over the windows with all H actuals, in batches of
  `train.eval_batch_size`, no output file; loading excluded. windows/s = forecast windows / rolling seconds,
  with torch's default intra-op threads (what `--rolling` uses) and with one thread (what
  `OMP_NUM_THREADS=1 forecast predict --rolling ...` gives). On this shared 2-core machine, with other jobs
  running, every parallel region waits for its second thread to be scheduled, so one thread is several times
  faster; on a quiet machine with more cores the default is the better choice. A single-window forecast always
  runs on one thread (`forecast.inference.predict.single_thread`): it is a handful of tiny ops.
- Models are 1-epoch, 5-batch throwaways with the paper architecture (accuracy is irrelevant here)."""
    md = ["# forecast predict: latency and rolling throughput", "", f"- command: `{env['command']}`",
          f"- date: {env['date']}", f"- machine: {env['machine']}",
          f"- load average (1, 5, 15 min): {env['load_average_start']} at the start, {env['load_average']} at the end "
          "(2 cores shared with other jobs)",
          "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), "", *table, "", notes, ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict_latency.md").write_text("\n".join(md))
    (RESULTS / "predict_latency.json").write_text(json.dumps({"environment": env, "results": rows}, indent=1,
                                                             default=float))
    print("\n".join(md))


if __name__ == "__main__":
    main()
