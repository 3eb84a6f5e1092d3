"""Which evaluation batch suits each model on this CPU? The test pass over every ETTh1 window at several batch sizes,
side by side.

The evaluation batch never changes a metric (val and test never drop a window), only the time: a small model pays
per-batch overhead at small batches, a large one falls out of the CPU's caches at large ones (Flowformer at
L=96 with label 48 runs 144 decoder tokens of width 2,048 per window: 256 windows hold about 300 MB in one
feed-forward activation). For each model (configs' defaults, L=96, H=96, untrained weights: speed does not depend
on them) and each size, forecast's test pass as ``forecast train`` runs it after fitting (``eval_speed.py``'s
``forecast_test``: Trainer.test with calibrated intervals); medians over interleaved rounds after a warm-up, and
the MSE of every size, which must agree. Results: ``benchmarks/results/eval_batch.{md,json}``.

    python benchmarks/eval_batch.py [--rounds 3] [--sizes 32 64 256] [MODEL ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import etth1_cell, md_table, write_results  # noqa: E402
from eval_speed import forecast_test, record  # noqa: E402


def with_eval_batch(made, size: int):  # noqa: ANN001, ANN201
    """``made`` (config, DataModule, module) with the evaluation batch set to ``size`` on both the config and the
    DataModule: one network, so every size evaluates the same weights."""
    cfg, dm, module = made
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_batch_size=size))
    dm.eval_batch_size = size
    return cfg, dm, module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 256])
    ap.add_argument("models", nargs="*", default=["dlinear", "itransformer", "olinear", "smamba", "flowformer"])
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    made = {m: etth1_cell(m) for m in args.models}
    found: dict[str, dict[str, list]] = {}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for model in args.models:
            for size in args.sizes:
                s, mse, windows = got = forecast_test(model, with_eval_batch(made[model], size))
                record(found, f"{model}|{size}", got)
                print(r, model, size, f"{s:.2f} s", f"mse {mse:.6f}", flush=True)
    rows = []
    for model in args.models:
        fastest = min(statistics.median(found[f"{model}|{z}"]["s"][1:]) for z in args.sizes)
        for size in args.sizes:
            rec = found[f"{model}|{size}"]
            med = statistics.median(rec["s"][1:])
            rows.append([model, size, rec["windows"][-1], f"{rec['mse'][-1]:.6f}", f"{med:.2f}",
                         f"{med / fastest:.2f}"])
    header = ["model", "eval batch", "windows", "MSE (last round)", "median s", "x fastest size"]
    path = write_results(
        "eval_batch", "The test pass over every ETTh1 window (L=96, H=96) at several evaluation batch sizes",
        md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds after a warm-up; forecast's test pass (Trainer.test with "
        "calibrated intervals, every metric) on one untrained network per model, so every size's MSE agrees. "
        "The configs' train.eval_batch_size is the size chosen from this table.")
    print(path.read_text())


if __name__ == "__main__":
    main()
