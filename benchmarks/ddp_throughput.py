"""DDP smoke-run throughput on this machine: `forecast train` with 1 process and with 2 DDP processes (gloo, CPU).

DLinear on ETTh1 at H=96 (L=336, batch 32 per process), ``--epochs`` full epochs (2 by default), each setting a
fresh ``forecast train`` command into a throw-away sqlite store. Reported per setting: the command's wall time
(process start, DDP launch, data, fit, test, MLflow), ``train_seconds`` (the fit itself, from the run), train
windows per second over the fit (every epoch reads all 8,209 train windows, split over the ranks), and the test
MSE. Settings: 1 process with 1 and with 2 torch threads, and 2 DDP processes with 1 thread each.

Usage: python benchmarks/ddp_throughput.py [--epochs 2] [--repeats 1]

Results go to benchmarks/results/ddp_throughput.md and .json. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import md_table, write_results  # noqa: E402

TRAIN_WINDOWS = 8209  # ETTh1, L=336, H=96


def run(label: str, devices: int, threads: int, epochs: int, work: Path) -> dict[str, Any]:
    """One ``forecast train`` command; its wall time and the run's numbers."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / f'{label}.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "cli", "train", "-d", "ETTh1", "-m", "dlinear", "--horizon", "96", "--epochs",
           str(epochs), "--set", "train.patience=100", "--accelerator", "cpu", "--devices", str(devices),
           "--tracking-uri", uri, "-q"]
    if devices > 1:
        cmd += ["--strategy", "ddp"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{label} failed: {out.stderr[-2000:]}")
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("ETTh1").experiment_id])
    m = r.data.metrics
    return {"setting": label, "processes": devices, "threads_per_process": threads, "wall_s": round(wall, 1),
            "train_s": round(m["train_seconds"], 2), "epochs": int(m["epochs_run"]),
            "windows_per_s": round(int(m["epochs_run"]) * TRAIN_WINDOWS / m["train_seconds"]),
            "test_mse": m["test_mse"], "test_windows": int(m["test_windows"]),
            "world_size": r.data.params["dist.world_size"]}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("FORECAST_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    load = os.getloadavg()
    settings = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 DDP processes x 1 thread", 2, 1)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for label, devices, threads in settings:
                work = Path(tmp) / f"r{rep}"
                work.mkdir(exist_ok=True)
                rows.append({**run(label, devices, threads, args.epochs, work), "repeat": rep})
                print(rows[-1], flush=True)
    def mean_of(label: str) -> dict[str, float]:  # a setting's mean over the repeats
        mine = [r for r in rows if r["setting"] == label]
        return {k: sum(r[k] for r in mine) / len(mine) for k in ("wall_s", "train_s", "windows_per_s")}

    base, two_threads, ddp = (mean_of(label) for label, _, _ in settings)
    table = md_table(["setting", "repeat", "wall s (command)", "fit s", "train windows/s", "test MSE",
                      "test windows"],
                     [[r["setting"], r["repeat"], f"{r['wall_s']:.1f}", f"{r['train_s']:.1f}",
                       f"{r['windows_per_s']:,}", r["test_mse"], f"{r['test_windows']:,}"] for r in rows])
    ratio = ddp["windows_per_s"] / base["windows_per_s"]
    thread_note = (f"- 1 process with 2 threads ran at {two_threads['windows_per_s'] / base['windows_per_s']:.2f}x the "
                   "1-thread speed: with anything else running on\n  the 2 cores, OpenMP threads spin-wait for each "
                   "other on every small op. This is why each DDP rank gets cores / devices\n  threads (1 here).\n"
                   if two_threads["windows_per_s"] < base["windows_per_s"] else "")
    notes = f"""
- {args.epochs} epochs of DLinear on ETTh1 (L=336, H=96, 65k parameters, batch 32 per process, 8,209 train
  windows an epoch), CPU only, gloo backend for DDP; `train.patience=100`, so every setting runs every epoch.
  "fit s" is the run's `train_seconds` (the fit, without process start, DDP launch and MLflow); windows/s is
  epochs x 8,209 / fit s. Load average when the script started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.
- **2 DDP processes against 1 process with 1 thread: {ratio:.2f}x** the train windows per second (means over
  {args.repeats} repeat(s)), and
  {ddp['wall_s'] / base['wall_s']:.2f}x the command's wall time (the second process starts, imports and loads
  the data too).
- On 2 cores the speedup is small at best: a DLinear step is tiny, so it costs about as much in Python and
  Lightning overhead and in the gloo all-reduce of the gradients as in arithmetic, and the two ranks share the
  two cores with everything else on the machine. DDP pays off where a step is compute-bound, on several GPUs
  or nodes. The point here is correctness: on 2 processes the same command finishes, records one run, and its
  test metrics cover all 2,785 test windows exactly once (tests/test_ddp.py checks them against a
  single-process evaluation of the same weights).
{thread_note}- The test MSE differs between 1 and 2 processes by design: with 2 processes each optimizer step averages the
  gradients of 2 batches of 32 (an effective batch of 64, half the steps per epoch), and the shuffles differ.
- No GPU is lent to this task: the `--devices 1` against `--precision bf16-mixed` comparison of iTransformer on
  Weather on a GPU was not run. `--precision bf16-mixed` and `--compile` were only smoke-tested on the CPU.
"""
    path = write_results("ddp_throughput", "DDP smoke run: 1 and 2 processes on a 2-core CPU machine", table,
                         {"rows": rows, "load_average": load}, notes)
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
