"""Start-up of a single-window `forecast predict`, against the `import torch` floor, measured interleaved.

A throwaway DLinear (ETTh1, L=96, H=24, a few batches) is trained into a temporary store. Then, ``--repeats``
rounds (default 7), each running one after the other in fresh processes:

- ``python -c "import torch"`` and ``python -c "import torch, mlflow"`` (the floors of issue 27);
- ``forecast predict`` from the model's local folder;
- ``forecast predict`` from ``runs:/ID/model`` with the model in the cache (``forecast.inference.fetch``: no
  MLflow import, the files checked against their manifest);
- ``forecast predict`` from ``runs:/ID/model`` with an empty cache (a fetch from the store each time).

Medians of wall seconds and their ratios to the floors. Results: ``benchmarks/results/predict_startup.{md,json}``.

    python benchmarks/predict_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _wall(argv: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    data = Path(os.environ.get("FORECAST_DATA_DIR", ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="predict-startup-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        cache = tmp / "cache"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FORECAST_CACHE_DIR": str(cache), "MLFLOW_TRACKING_URI": uri}
        py = sys.executable
        subprocess.run([py, "-m", "cli", "train", "-d", "ETTh1", "-m", "dlinear", "-L", "96", "-H", "24", "--epochs",
                        "1", "--set", "train.limit_train_batches=3", "--tracking-uri", uri, "-q"], check=True, cwd=tmp,
                       env=env)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run_id = client.search_runs([client.get_experiment_by_name("ETTh1").experiment_id])[0].info.run_id
        pl.read_csv(gzip.decompress((data / "ETTh1.csv.gz").read_bytes())).tail(200).write_csv(tmp / "h.csv")
        predict = [py, "-m", "cli", "predict", "-i", str(tmp / "h.csv"), "-q", "--tracking-uri", uri, "-m"]
        _wall([*predict, f"runs:/{run_id}/model"], env, tmp)  # fetches it into the cache: copy that as a folder
        local = tmp / "local"
        shutil.copytree(next(cache.glob(f"models/*/{run_id}/model")), local)
        cases = {
            "import torch": [py, "-c", "import torch"],
            "import torch, mlflow": [py, "-c", "import torch, mlflow"],
            "predict, local folder": [*predict, str(local)],
            "predict, runs:/ (cached)": [*predict, f"runs:/{run_id}/model"],
            "predict, runs:/ (fetched)": [*predict, f"runs:/{run_id}/model"],
        }
        _wall(cases["predict, runs:/ (cached)"], env, tmp)  # fills the cache; warms the page cache for all
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeats):
            for name, argv in cases.items():
                if name.endswith("(fetched)"):
                    shutil.rmtree(cache, ignore_errors=True)
                times[name].append(_wall(argv, env, tmp))
            _wall(cases["predict, runs:/ (cached)"], env, tmp)  # the cache back for the next round
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s, both_s = med["import torch"], med["import torch, mlflow"]
    # on a noisy machine the ratio within a round (the processes ran back to back) is steadier than a ratio of medians
    ratio = {k: statistics.median(a / b for a, b in zip(v, times["import torch"])) for k, v in times.items()}
    rows = [[k, round(v, 2), round(v / torch_s, 2), round(v / both_s, 2), round(ratio[k], 2)] for k, v in med.items()]
    path = write_results("predict_startup", "Start-up of a single-window `forecast predict`, interleaved rounds",
                         md_table(["process", "median s", "× import torch", "× import torch, mlflow",
                                   "median of per-round × import torch"], rows),
                         {"repeats": args.repeats, "seconds": times, "medians": med},
                         "Targets (issue 27): a local folder at most 1.2× `import torch`; runs:/ or models:/ at most "
                         "1.3× `import torch, mlflow`.")
    print(path.read_text())


if __name__ == "__main__":
    main()
