"""What Python's cyclic garbage collector costs a `forecast train` process, with the collector paused through
start-up (what ``forecast`` does: ``forecast.process.pause_gc``/``resume_gc``) and left on, side by side.

Each round runs ``forecast train --dataset ETTh1 --model dlinear`` (the paper's L=336, H=96, early stopping) in a
fresh process both ways, interleaved: ``paused`` is the ``forecast`` command itself (``cli.entry``); ``on`` the
same entry without the pause. A ``gc.callbacks`` hook counts each generation's collections and their seconds, and
the wall clock marks the end of the first epoch (its progress line: imports, the MLflow store, data and model
before it, plus one epoch) and of the process. Medians over rounds. Results:
``benchmarks/results/gc_startup.{md,json}``.

    python benchmarks/gc_startup.py [--rounds 3] [ARGS of forecast train ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The child: cli.entry as installed, or with the pause taken out; the collector's work is summed and written at
# exit (exit_after runs the atexit handlers before its quick exit).
CHILD = """
import atexit, gc, json, sys, time
sys.path.insert(0, {root!r})
stats, t0 = {{}}, [0.0]
def hook(phase, info):
    if phase == "start":
        t0[0] = time.perf_counter()
    else:
        n, s = stats.get(info["generation"], (0, 0.0))
        stats[info["generation"]] = (n + 1, s + time.perf_counter() - t0[0])
gc.callbacks.append(hook)
atexit.register(lambda: open({out!r}, "w").write(json.dumps(stats)))
import forecast.process
if {keep_on}:
    forecast.process.pause_gc = lambda: None
sys.argv = ["forecast", *{args!r}]
import cli
cli.entry()
"""


def one(variant: str, args: list[str], scratch: Path) -> dict:
    """One ``forecast train`` process: seconds to the end of its first epoch and to its exit, and the collector's
    collections per generation."""
    out = scratch / f"gc-{variant}.json"
    code = CHILD.format(root=str(ROOT), out=str(out), keep_on=variant == "on", args=args)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=scratch, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith("epoch 1/"):
            first = time.perf_counter() - t
    if proc.wait() != 0:
        raise SystemExit(f"forecast train {' '.join(args)} failed ({variant})")
    total = time.perf_counter() - t
    stats = {int(k): v for k, v in json.loads(out.read_text()).items()}
    return {"first_epoch_s": first, "total_s": total, "gc": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("args", nargs="*", default=["train", "--dataset", "ETTh1", "--model", "dlinear"])
    a = ap.parse_args()
    found: dict[str, list[dict]] = {"paused": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{scratch}/mlflow.db")
        for r in range(a.rounds + 1):  # round 0: warm-up (the page cache, the store's schema)
            for variant in found:
                got = one(variant, a.args, scratch)
                if r:
                    found[variant].append(got)
                print(r, variant, f"first epoch {got['first_epoch_s']:.2f} s, total {got['total_s']:.2f} s",
                      {g: f"{n} in {s:.2f} s" for g, (n, s) in sorted(got["gc"].items())}, flush=True)
    rows = []
    for variant, runs in found.items():
        med = {k: statistics.median(x[k] for x in runs) for k in ("first_epoch_s", "total_s")}
        gens = [f"{statistics.median(x['gc'].get(g, (0, 0.0))[0] for x in runs):.0f} in "
                f"{statistics.median(x['gc'].get(g, (0, 0.0))[1] for x in runs):.2f} s" for g in (0, 1, 2)]
        rows.append([variant, f"{med['first_epoch_s']:.2f}", f"{med['total_s']:.2f}", *gens])
    header = ["collector through start-up", "to the first epoch's end s", "process s", "gen 0 collections",
              "gen 1", "gen 2 (full)"]
    path = write_results(
        "gc_startup", "The garbage collector in a forecast train process: paused through start-up, and left on",
        md_table(header, rows), found,
        f"Medians over {a.rounds} interleaved rounds after a warm-up, each a fresh `forecast {' '.join(a.args)}` "
        "process in a scratch folder with its own MLflow store. 'paused': the forecast command as installed (the "
        "collector paused until the run's first epoch, what start-up built then frozen); 'on': the same entry "
        "with the pause taken out. Collections: count and seconds per generation over the whole process.")
    print(path.read_text())


if __name__ == "__main__":
    main()
