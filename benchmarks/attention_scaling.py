"""iTransformer with full against Flow-Attention as the variate count N grows (synthetic data).

For each N in {7, 321, 862, 2000} and each attention, a fresh subprocess builds iTransformer at the same
d_model, runs a few training steps (forward + backward + Adam) on random [B, L, N] batches, and reports
the median step time and its peak RSS above the state before the first step. Full and flow run
interleaved per N so that machine noise hits both. The fitted exponent is the slope of log(time) against
log(N) over N >= 321.

On a GPU (--device cuda) steps are timed after a synchronize and peak memory is torch's allocator peak; the
results go to attention_scaling_cuda.{md,json,png} beside the CPU ones.

Usage: python benchmarks/attention_scaling.py [--d-model 128] [--batch 8] [--steps 4] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, md_table, model_step, write_results  # noqa: E402

def measure(attention: str, n: int, args: argparse.Namespace) -> dict:
    params = {"d_model": args.d_model, "d_ff": args.d_model, "n_heads": 8, "e_layers": 2, "attention": attention}
    return model_step("itransformer", params, n, args.batch, args.steps, threads=args.threads, device=args.device)


def slope(ns: list[int], ys: list[float]) -> float:
    xs, ls = [math.log(n) for n in ns], [math.log(y) for y in ys]
    mx, my = sum(xs) / len(xs), sum(ls) / len(ls)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ls)) / sum((a - mx) ** 2 for a in xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--ns", default="7,321,862,2000")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1 is robust on a shared box)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: --device cuda, but torch sees no CUDA GPU here; drop --device or use a CUDA build of torch.")
    name = "attention_scaling" + ("_cuda" if args.device == "cuda" else "")
    mem = "peak GPU memory allocated (MB)" if args.device == "cuda" else "peak RSS increase (MB)"
    ns = [int(v) for v in args.ns.split(",")]
    res: dict[str, dict[int, dict]] = {"full": {}, "flow": {}}
    for n in ns:
        for attention in ("full", "flow"):
            res[attention][n] = measure(attention, n, args)
            print(attention, n, res[attention][n], flush=True)
    big = [n for n in ns if n >= 321]
    exps = {a: slope(big, [res[a][n]["ms"] for n in big]) for a in res}
    mem_exps = {a: slope(big, [max(res[a][n]["peak_mb"], 1.0) for n in big]) for a in res}
    cross = next((n for n in ns if res["flow"][n]["ms"] < res["full"][n]["ms"]), None)
    rows = [[n, res["full"][n]["ms"], res["flow"][n]["ms"], res["full"][n]["ms"] / res["flow"][n]["ms"],
             res["full"][n]["peak_mb"], res["flow"][n]["peak_mb"]] for n in ns]
    table = md_table(["N", "full ms/step", "flow ms/step", "full/flow time", "full peak MB", "flow peak MB"], rows)
    table += (f"\n\nFitted exponent of step time in N (N >= 321): full {exps['full']:.2f}, flow {exps['flow']:.2f}. "
              f"Peak memory exponent: full {mem_exps['full']:.2f}, flow {mem_exps['flow']:.2f}. "
              f"Flow is faster from N = {cross} on (of the N measured).")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for a, style in (("full", "o-"), ("flow", "s-")):
            axes[0].loglog(ns, [res[a][n]["ms"] for n in ns], style, label=a)
            axes[1].loglog(ns, [max(res[a][n]["peak_mb"], 1.0) for n in ns], style, label=a)
        axes[0].set(xlabel="variates N", ylabel="ms per training step", title="step time")
        axes[1].set(xlabel="variates N", ylabel=mem, title="peak memory")
        for ax in axes:
            ax.legend()
            ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        RESULTS.mkdir(parents=True, exist_ok=True)
        fig.savefig(RESULTS / f"{name}.png", dpi=90)
    except Exception as err:  # the table matters more than the plot
        print("plot failed:", err)
    path = write_results(name, f"iTransformer full vs Flow-Attention (d_model {args.d_model}, "
                         f"batch {args.batch}, L=H=96, 2 layers, synthetic data, {args.device})", table,
                         {"results": res, "exponents": exps, "memory_exponents": mem_exps, "crossover_n": cross},
                         f"Each cell is a fresh process (best of {args.steps} timed steps, {args.threads} thread(s); peak = "
                         + ("torch.cuda.max_memory_allocated above the state before the first step"
                            if args.device == "cuda" else "max RSS growth") + f"). Plot: {name}.png.")
    print(path.read_text())


if __name__ == "__main__":
    main()
