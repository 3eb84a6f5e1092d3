"""Evaluation batch against forward slices: does a model forecast its evaluation windows faster in smaller slices,
and is each window's forecast then the same bits?

For each model, untrained at the configs' ETTh1 defaults (L=96, H=96), the first 1,024 test windows are forecast
without autograd in forwards of 256 windows (forecast's evaluation batch), 128, 64 and 32; the figure is the median
of the rounds, and 'same bits' compares every slice size's forecasts with the 256-window ones. A second check uses
the tiny shapes of tests/test_models.py (L=32, H=8, three variates and four marks), where some kernels differ.
Results: ``benchmarks/results/eval_slices.{md,json}``.

    python benchmarks/eval_slices.py [--rounds 3] [--models itransformer,smamba,olinear,flowformer]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import etth1_cell, md_table, write_results  # noqa: E402

SLICES = (256, 128, 64, 32)
WINDOWS = 1024


def forecast_in(model, batch: dict, size: int):  # noqa: ANN001, ANN201
    """``model``'s forecast of a window batch, ``size`` windows a forward (``run_batch`` on each slice)."""
    import torch

    from forecast.models import run_batch

    n = batch["x"].shape[0]
    return torch.cat([run_batch(model, {k: v[s : s + size] for k, v in batch.items()}) for s in range(0, n, size)])


def real_shapes(name: str, rounds: int) -> tuple[dict[int, float], dict[int, bool]]:
    import torch

    _, dm, module = etth1_cell(name)
    model = module.model.eval()
    batch = dm.dataset("test")[torch.arange(WINDOWS)]
    seconds: dict[int, list[float]] = {s: [] for s in SLICES}
    same: dict[int, bool] = {}
    with torch.no_grad():
        whole = forecast_in(model, batch, SLICES[0])
        for _ in range(rounds):
            for size in SLICES:  # interleaved
                t = time.perf_counter()
                got = forecast_in(model, batch, size)
                seconds[size].append(time.perf_counter() - t)
                same[size] = same.get(size, True) and torch.equal(got, whole)
    return {s: statistics.median(v) for s, v in seconds.items()}, same


def tiny_shapes(name: str) -> bool:
    import torch

    from forecast.models import ModelContext, build_config, create_model

    torch.manual_seed(0)
    L, H, N, C, B = 32, 8, 3, 4, 131
    extras = {"q_in": torch.linalg.qr(torch.randn(L, L))[0], "q_out": torch.linalg.qr(torch.randn(H, H))[0],
              "season": torch.tensor(5)}
    model = create_model(name, build_config(name, {}), ModelContext(L, H, N, C, extras=extras)).eval()
    batch = {"x": torch.randn(B, L, N), "x_mark": torch.rand(B, L, C) - 0.5, "y_mark": torch.rand(B, H, C) - 0.5}
    with torch.no_grad():
        return torch.equal(forecast_in(model, batch, 64), forecast_in(model, batch, B))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="dlinear,itransformer,iflowformer,smamba,olinear,flowformer")
    a = ap.parse_args()
    from forecast.models import model_names

    unknown = sorted(set(a.models.split(",")) - set(model_names()))
    if unknown:
        ap.error(f"unknown model {', '.join(unknown)}; known: {', '.join(model_names())}")
    import torch

    torch.set_num_threads(2)
    rows, data = [], {}
    for name in a.models.split(","):
        seconds, same = real_shapes(name, a.rounds)
        tiny = tiny_shapes(name)
        data[name] = {"seconds": seconds, "same_bits": same, "same_bits_tiny": tiny}
        base = seconds[SLICES[0]]
        rows.append([name, *(f"{seconds[s]:.3f} ({base / seconds[s]:.2f}x)" for s in SLICES),
                     "yes" if all(same.values()) else "no", "yes" if tiny else "no"])
        print(rows[-1], flush=True)
    header = ["model", *(f"{s} windows s" for s in SLICES), "same bits (ETTh1)", "same bits (tiny, slices of 64)"]
    path = write_results(
        "eval_slices", f"Forecasting {WINDOWS:,} ETTh1 test windows without autograd, in forwards of different sizes",
        md_table(header, rows), data,
        f"Medians of {a.rounds} interleaved rounds; in brackets, the speed-up over forwards of 256 windows "
        "(forecast's evaluation batch). Untrained models at the configs' ETTh1 defaults (L=96, H=96). "
        "'same bits': every window's forecast equal to the 256-window forecast, bit for bit.")
    print(path.read_text())


if __name__ == "__main__":
    main()
