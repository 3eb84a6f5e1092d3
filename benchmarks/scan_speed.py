"""Selective scan speed and memory: our chunked scan against an unbind loop and mambapy's pscan.

Forward + backward of the scan alone (d_inner 128, d_state 16, batch 32) at sequence lengths 7, 96, 321
and 862, each implementation in a fresh subprocess (median step time, peak RSS growth), interleaved per
length. Then S-Mamba against iTransformer training-step time at N = 321 and 862 on synthetic data.

The "unbind loop" iterates over time with ``unbind`` so its backward stays linear (indexing ``x[:, t]``
in a loop makes it quadratic).

Usage: python benchmarks/scan_speed.py [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import md_table, model_step, run_subprocess_json, write_results  # noqa: E402

SCAN_WORKER = r"""
import json, resource, statistics, sys, time
import torch
impl, T, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
Bsz, Di, Ns = 32, 128, 16
g = torch.Generator().manual_seed(0)
u = torch.randn(Bsz, T, Di, generator=g).requires_grad_()
delta = (torch.rand(Bsz, T, Di, generator=g) * 0.1 + 1e-3).requires_grad_()
A = (-torch.arange(1, Ns + 1, dtype=torch.float32).repeat(Di, 1)).requires_grad_()
B = torch.randn(Bsz, T, Ns, generator=g).requires_grad_()
C = torch.randn(Bsz, T, Ns, generator=g).requires_grad_()
D = torch.ones(Di).requires_grad_()

def unbind_loop(u, delta, A, B, C, D):
    dA = torch.exp(delta.unsqueeze(-1) * A)                      # [B, T, Di, Ns]
    bx = (delta * u).unsqueeze(-1) * B.unsqueeze(2)               # [B, T, Di, Ns]
    h = torch.zeros(u.shape[0], Di, Ns)
    ys = []
    for a_t, bx_t, c_t in zip(dA.unbind(1), bx.unbind(1), C.unbind(1)):
        h = a_t * h + bx_t
        ys.append((h * c_t.unsqueeze(1)).sum(-1))
    return torch.stack(ys, 1) + u * D

def mambapy_pscan(u, delta, A, B, C, D):
    from mambapy.pscan import pscan
    dA = torch.exp(delta.unsqueeze(-1) * A)
    bx = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    hs = pscan(dA, bx)                                           # [B, T, Di, Ns]
    return (hs @ C.unsqueeze(-1)).squeeze(-1) + u * D

if impl == "chunked":
    from forecast.layers.selective_scan import selective_scan
    fn = lambda *a: selective_scan(*a, impl="chunked")
else:
    fn = {"unbind": unbind_loop, "pscan": mambapy_pscan}[impl]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for i in range(steps + 1):
    t = time.perf_counter()
    fn(u, delta, A, B, C, D).pow(2).mean().backward()
    if i:
        times.append(time.perf_counter() - t)
print(json.dumps({"ms": 1000 * min(times), "median_ms": 1000 * statistics.median(times),
                  "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""

def run(worker: str, *args: str) -> dict:
    return run_subprocess_json(["-c", worker, *args])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lengths", default="7,96,321,862")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1 is robust on a shared box)")
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    impls = ("chunked", "unbind", "pscan")
    res = {impl: {} for impl in impls}
    for T in lengths:
        for impl in impls:
            res[impl][T] = run(SCAN_WORKER, impl, str(T), str(args.steps), str(args.threads))
            print(impl, T, res[impl][T], flush=True)
    rows = [[T, *(res[i][T]["ms"] for i in impls), res["unbind"][T]["ms"] / res["chunked"][T]["ms"],
             *(res[i][T]["peak_mb"] for i in impls), res["chunked"][T]["peak_mb"] / max(res["unbind"][T]["peak_mb"], 1)]
            for T in lengths]
    table = md_table(["T", "chunked ms", "unbind ms", "mambapy pscan ms", "speed-up vs unbind", "chunked MB",
                      "unbind MB", "pscan MB", "memory chunked/unbind"], rows)
    models = {}
    for n in (321, 862):
        for name in ("smamba", "itransformer"):
            params = {"d_model": 128, "d_ff": 128, "e_layers": 2, **({"d_state": 16} if name == "smamba" else {})}
            models[f"{name}@{n}"] = model_step(name, params, n, 16, args.steps, threads=args.threads)
            print(name, n, models[f"{name}@{n}"], flush=True)
    table += "\n\nTraining step (forward + backward + Adam), d_model 128, batch 16, L=H=96, 2 layers, synthetic data:\n\n"
    table += md_table(["N", "S-Mamba ms", "iTransformer ms", "S-Mamba / iTransformer"],
                      [[n, models[f"smamba@{n}"]["ms"], models[f"itransformer@{n}"]["ms"],
                        models[f"smamba@{n}"]["ms"] / models[f"itransformer@{n}"]["ms"]] for n in (321, 862)])
    path = write_results("scan_speed", "Selective scan: chunked vs unbind loop vs mambapy pscan "
                         "(fwd+bwd, batch 32, d_inner 128, d_state 16)", table, {"scan": res, "models": models},
                         f"Best of {args.steps} timed steps after a warm-up, {args.threads} torch thread(s) per worker. "
                         "Targets (issue 5): >= 1.5x faster than the unbind loop at T = 321 and 862, peak memory "
                         "within 2x of the loop's. Each cell is a fresh process; peak = max RSS growth.")
    print(path.read_text())


if __name__ == "__main__":
    main()
