"""The fixed cost of a `forecast train` process: what it spends before its first epoch, between its last epoch and its
last line, and between its last line and its exit; the quick exit (``forecast.commands.entry.exit_after``, what the
``forecast`` command runs) against the interpreter's normal teardown (``cli.main()`` and a plain return), interleaved.
Then what opening the MLflow store costs in a fresh interpreter: a new store copied from the schema template
(``forecast.tracking.schema_template``), a new store MLflow migrates itself, and an existing store.

Each process trains DLinear on ETTh1 (the configs' defaults, L=336, H=96) for ``--epochs`` epochs into its own
sqlite store. Its output lines are time-stamped as they arrive; the epoch lines give each epoch's own seconds.
Phases (medians over the rounds): ``start`` = first epoch line's time minus that epoch's seconds (imports, data,
model, the MLflow run); ``after`` = last line's time minus the last epoch line's (test pass, calibration, artifacts,
the pyfunc model, the summary); ``teardown`` = exit minus last line.
With ``--tslib PATH`` (a checkout of thuml/Time-Series-Library) it also runs TSLib's own ``run.py`` as a process
(DLinear, ETTh1, L=336, H=96, batch 32, ``--num_workers 0``, patience out of reach) beside ``forecast train`` of the
same cell, each for 1 and for 3 epochs; a process's fixed cost is the intercept of its wall time against its epoch
count, ``T(1) - (T(3) - T(1)) / 2``, so each side's epochs (TSLib's also score the test split) drop out.
Results: ``benchmarks/results/run_overhead.{md,json}``.

    python benchmarks/run_overhead.py [--rounds 3] [--epochs 2] [--tslib PATH] [--name run_overhead]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCH = re.compile(r"epoch (\d+)/\d+ .* ([0-9.]+) s$")
VARIANTS = {"normal exit (cli.main)": ["-c", "import cli; cli.main()"], "quick exit (forecast)": ["-m", "cli"]}


def one_run(argv: list[str], cwd: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env={**os.environ, "COLUMNS": "200"})
    stamped = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stdout]
    rc = proc.wait()
    end = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{argv} exited {rc}:\n" + "\n".join(line for _, line in stamped[-20:]))
    epochs = [(t, float(m.group(2))) for t, line in stamped if (m := EPOCH.search(line))]
    first_t, first_s = epochs[0]
    last_line = max(t for t, line in stamped if line.strip())
    return {"total": end, "start": first_t - first_s, "epochs": sum(s for _, s in epochs),
            "after": last_line - epochs[-1][0], "teardown": end - last_line}


def tslib_process(checkout: Path, epochs: int) -> None:
    """TSLib's run.py in this process, as its script would run it (``--tslib-worker``)."""
    import runpy

    from _tslib import prepare

    scratch = prepare(checkout)
    sys.argv = ["run.py", "--task_name", "long_term_forecast", "--is_training", "1", "--model_id", "ETTh1_336_96",
                "--model", "DLinear", "--data", "ETTh1", "--root_path", str(scratch), "--data_path", "ETTh1.csv",
                "--features", "M", "--seq_len", "336", "--label_len", "48", "--pred_len", "96", "--enc_in", "7",
                "--dec_in", "7", "--c_out", "7", "--des", "Exp", "--itr", "1", "--batch_size", "32",
                "--learning_rate", "0.005", "--train_epochs", str(epochs), "--patience", "10", "--num_workers", "0", "--no_use_gpu"]
    runpy.run_path(str(checkout / "run.py"), run_name="__main__")


def intercept(tslib: Path | None, rounds: int, tmp: Path) -> tuple[str, dict]:
    """Fixed cost = T(1 epoch) - (T(3) - T(1)) / 2 per side, interleaved."""
    sides = {"forecast train (quick exit)": lambda e, db: [sys.executable, "-m", "cli", "train", "-d", "ETTh1", "-m",
                                                          "dlinear", "--epochs", str(e), "--set", "train.patience=10",
                                                          "--tracking-uri", f"sqlite:///{db}", "-q"],
             "TSLib run.py (0 workers)": lambda e, db: [sys.executable, __file__, "--tslib", str(tslib),
                                                        "--tslib-worker", str(e)]}
    walls: dict[str, dict[int, list[float]]] = {k: {1: [], 3: []} for k in sides}
    for r in range(rounds + 1):  # round 0 warms up
        for name, argv in sides.items():
            for epochs in (1, 3):
                t0 = time.perf_counter()
                subprocess.run(argv(epochs, tmp / f"i{r}{epochs}.db"), cwd=tmp, check=True, capture_output=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if r:
                    walls[name][epochs].append(time.perf_counter() - t0)
                    print(name, epochs, round(walls[name][epochs][-1], 2), flush=True)
    rows = []
    for name, w in walls.items():
        t1, t3 = statistics.median(w[1]), statistics.median(w[3])
        rows.append([name, f"{t1:.2f}", f"{t3:.2f}", f"{(t3 - t1) / 2:.2f}", f"{t1 - (t3 - t1) / 2:.2f}"])
    table = md_table(["process", "1 epoch s", "3 epochs s", "per epoch s", "fixed cost s"], rows)
    return "## Beside TSLib's run.py (DLinear, ETTh1, L=336, H=96)\n\n" + table, walls


STORE_OPEN = """
import sys, time
from forecast import tracking
import mlflow.tracking
t = time.perf_counter()
tracking.client(tracking.sqlite_url(sys.argv[1]))
print(time.perf_counter() - t)
"""


def store_open(rounds: int, tmp: Path) -> tuple[str, dict]:
    """Seconds ``tracking.client`` takes to open a store in a fresh interpreter (its imports done first): a new
    store copied from the schema template, a new store MLflow migrates itself (no cache to keep a template in),
    and an existing store; interleaved."""
    blocker = tmp / "no-cache"
    blocker.write_text("")  # FORECAST_CACHE_DIR a file: no template can be kept, MLflow creates the store
    kinds = {"new store, from the schema template": None, "new store, MLflow migrates it": str(blocker),
             "existing store": None}
    seen: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds + 1):  # round 0 makes the template and the existing store
        for k, (kind, cache) in enumerate(kinds.items()):
            db = tmp / ("existing.db" if kind.startswith("existing") else f"open-{r}-{k}.db")
            env = {**os.environ, **({"FORECAST_CACHE_DIR": cache} if cache else {})}
            out = subprocess.run([sys.executable, "-c", STORE_OPEN, str(db)], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout
            if r:
                seen[kind].append(float(out.strip().splitlines()[-1]))
    rows = [[kind, f"{statistics.median(v):.2f}", " ".join(f"{x:.2f}" for x in v)] for kind, v in seen.items()]
    return "## Opening the MLflow store\n\n" + md_table(["store", "median s", "each round s"], rows), seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--tslib", type=Path, help="a checkout of thuml/Time-Series-Library: add the side-by-side part")
    ap.add_argument("--name", default="run_overhead", help="results file name (benchmarks/results/NAME.md)")
    ap.add_argument("--tslib-worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tslib_worker:
        tslib_process(args.tslib.resolve(), args.tslib_worker)
        return
    found: dict[str, list[dict[str, float]]] = {k: [] for k in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as tmp:
        for r in range(args.rounds + 1):  # round 0 warms the page cache and creates the stores
            for name, how in VARIANTS.items():
                store = Path(tmp) / f"{len(found[name])}-{name[:5]}.db"
                argv = [sys.executable, *how, "train", "-d", "ETTh1", "-m", "dlinear", "--epochs", str(args.epochs),
                        "--tracking-uri", f"sqlite:///{store}"]
                got = one_run(argv, Path(tmp))
                if r:
                    found[name].append(got)
                    print(name, {k: round(v, 2) for k, v in got.items()}, flush=True)
        beside, walls = intercept(args.tslib.resolve(), args.rounds, Path(tmp)) if args.tslib else ("", {})
        opening, opened = store_open(max(args.rounds, 5), Path(tmp))
    rows = []
    for name, runs in found.items():
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        rows.append([name, *(f"{med[k]:.2f}" for k in ("total", "start", "epochs", "after", "teardown")),
                     f"{med['total'] - med['epochs']:.2f}"])
    header = ["process", "total s", "start s", "epochs s", "after s", "teardown s", "fixed cost s (total - epochs)"]
    path = write_results(
        args.name, "The fixed cost of a forecast train process (DLinear ETTh1, L=336, H=96)",
        md_table(header, rows) + ("\n\n" + beside if beside else "") + "\n\n" + opening,
        {"phases": found, "beside_tslib": walls, "store_open": opened}, f"Medians over {args.rounds} interleaved rounds of {args.epochs} epochs each, one process at a time. "
        "'start': imports (Lightning alone is about 3.5 s: it imports scipy, torchmetrics, matplotlib and "
        "torch._dynamo), data, model and the MLflow run; 'after': the test pass over every window, conformal "
        "calibration, artifacts, the pyfunc model and the summary; 'teardown': from the last line to the exit. "
        "Beside TSLib: medians of each process's wall time over the same rounds; TSLib's epochs also score the "
        "test split, and after the last one it reloads the best checkpoint and tests; ours tests, calibrates and "
        "logs the model to MLflow. Python's bytecode cache was "
        + ("off (PYTHONDONTWRITEBYTECODE is set, as on this machine): every process compiles both sides' own source "
           "again." if os.environ.get("PYTHONDONTWRITEBYTECODE") else
           f"on ({os.environ.get('PYTHONPYCACHEPREFIX') or '__pycache__'}), warmed by round 0, as for a user.")
        )
    print(path.read_text())


if __name__ == "__main__":
    main()
