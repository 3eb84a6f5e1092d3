"""Training epochs: forecast against Time-Series-Library's own ``train()``, side by side, one process at a time.

Each measurement is a fresh process (``--worker``) that trains ETTh1 (M, L=96 or ``--seq-len``, H=96, batch 32) for
``--epochs`` epochs with early stopping out of reach, and reports per epoch:

- **train loop**: the optimisation steps over every train batch. TSLib: its own ``Epoch: N cost time`` (its
  DataLoader, with ``--num_workers`` 0 and run.py's default 10, which start their workers every epoch). forecast:
  from Lightning's train-epoch start to its validation start (a timing callback).
- **epoch**: everything between two epochs. TSLib: the loop, a validation pass and a test pass (it scores the test
  split every epoch), early stopping's checkpoint; forecast: the loop and the validation pass.

forecast's worker runs as the ``forecast`` command does: the garbage collector paused through the imports and what
start-up built frozen when the fit begins (``forecast.process``; ``_common.timed_epochs``).
Both sides train the same architecture from their own code (TSLib: ``models/DLinear.py``, ``models/iTransformer.py``
at forecast's ETTh1 size, d_model 256; forecast: its registry with ``-L 96``). Medians over the epochs after the
first of each process, then over interleaved rounds. Results: ``benchmarks/results/train_speed.{md,json}``.

    python benchmarks/train_speed.py --tslib /path/to/Time-Series-Library [--rounds 2] [--epochs 3] [--seq-len 96]
        [--models dlinear,itransformer]   (a run other than L=96 with both models: train_speed_<models>_L<L>)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, timed_epochs, write_results  # noqa: E402
from _tslib import NAMES, args as tslib_args, prepare, quiet_stdout  # noqa: E402

COST = re.compile(r"Epoch: (\d+) cost time: ([0-9.]+)")


def tslib_worker(checkout: Path, model: str, workers: int, epochs: int, seq_len: int) -> dict:
    scratch = prepare(checkout)
    from exp.exp_long_term_forecasting import Exp_Long_Term_Forecast

    exp = Exp_Long_Term_Forecast(tslib_args(NAMES[model], workers, scratch, epochs, seq_len))
    ends: list[float] = []

    class Stamp:  # notes the time of each "Epoch: N, Steps" line as TSLib prints it
        def __init__(self, inner) -> None:  # noqa: ANN001
            self.inner = inner

        def write(self, text: str) -> int:
            if "Steps:" in text:
                ends.append(time.perf_counter())
            return self.inner.write(text)

        def flush(self) -> None:
            self.inner.flush()

    with quiet_stdout() as buf:
        sys.stdout = Stamp(sys.stdout)
        t0 = time.perf_counter()
        exp.train(f"{model}_w{workers}")
        sys.stdout = sys.stdout.inner
    loops = [float(m.group(2)) for m in COST.finditer(buf.getvalue())]
    return {"loop": loops, "epoch": [b - a for a, b in zip([t0, *ends], ends)]}


def forecast_worker(model: str, epochs: int, seq_len: int) -> dict:
    from forecast.process import pause_gc

    pause_gc()  # as `forecast train` runs (cli.entry): no collection through the imports either
    from forecast.resolve import resolve

    return timed_epochs(resolve(model, "ETTh1", {"data.seq_len": seq_len, "data.horizon": 96, "train.batch_size": 32,
                                                 "train.epochs": epochs, "train.patience": epochs + 1}))


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(f"{argv}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tslib", type=Path, help="a checkout of thuml/Time-Series-Library")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--models", default=",".join(NAMES))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    models = a.models.split(",")
    if a.worker:  # one measurement in this process
        side, model, workers = a.worker.split(":")
        got = (tslib_worker(a.tslib, model, int(workers), a.epochs, a.seq_len) if side == "tslib"
               else forecast_worker(model, a.epochs, a.seq_len))
        print(json.dumps(got))
        return
    variants = [("tslib", 0), ("tslib", 10), ("forecast", 0)]
    found: dict[str, list[dict]] = {}
    for _ in range(a.rounds):
        for model in models:
            for side, workers in variants:
                argv = ["--worker", f"{side}:{model}:{workers}", "--epochs", str(a.epochs), "--seq-len", str(a.seq_len)]
                got = measure(argv + (["--tslib", str(a.tslib)] if side == "tslib" else []))
                key = f"{model}|{side}|{workers}"
                found.setdefault(key, []).append(got)
                print(key, {k: [round(v, 2) for v in vals] for k, vals in got.items()}, flush=True)

    def med(key: str, what: str) -> float:  # the median over rounds of each process's median after epoch 1
        return statistics.median(statistics.median(r[what][1:] or r[what]) for r in found[key])

    rows = []
    for model in models:
        ours = {w: med(f"{model}|forecast|0", w) for w in ("loop", "epoch")}
        for side, workers in variants:
            key = f"{model}|{side}|{workers}"
            name = f"TSLib train(), {workers} workers" if side == "tslib" else "forecast train"
            loop, epoch = med(key, "loop"), med(key, "epoch")
            rows.append([model, name, f"{loop:.2f}", f"{loop / ours['loop']:.2f}", f"{epoch:.2f}",
                         f"{epoch / ours['epoch']:.2f}"])
    header = ["model", "process", "train loop s", "x forecast's loop", "epoch s", "x forecast's epoch"]
    name = "train_speed" if (a.seq_len, models) == (96, list(NAMES)) else f"train_speed_{'_'.join(models)}_L{a.seq_len}"
    path = write_results(
        name, f"Training epochs on ETTh1 (L={a.seq_len}, H=96, batch 32): forecast against TSLib's train()",
        md_table(header, rows), found,
        f"{a.rounds} interleaved rounds, each a fresh process per side training {a.epochs} epochs; per process the "
        "median over its epochs after the first, then the median over rounds. TSLib's epoch also scores the test "
        "split; forecast's does not. Targets (issue 27): TSLib's DLinear loop at least 1.5x forecast's with 0 "
        "workers and 3x with 10; iTransformer at least 1.3x.")
    print(path.read_text())


if __name__ == "__main__":
    main()
