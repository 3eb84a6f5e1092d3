"""A change to a network's code, measured before and after on the same cells in one run, to the same bits.

The same worker runs on two source trees: ``--before`` (a commit, unpacked with ``git archive`` into a temporary
directory) and this checkout, each in a fresh process per round, rounds interleaved. Per cell (configs' defaults,
untrained weights, seed 0) the worker times

- **eval**: the forward over every test window at the configs' evaluation batch, under inference mode;
- **train step**: zero_grad, loss, backward and Adam over the first ``--steps`` train batches (dropout on);

and hashes the test forecasts and the weights after those steps, which must agree between the trees to the bit.

Its records (``benchmarks/results/NAME.{md,json}``):

- ``scan_layout``: S-Mamba's chunked scan, whose forward held a chunk's states as ``[k, B, Di, Ns]`` (Ns, 2 in
  most official scripts, innermost: the discretisation's products and exp ran on pairs, and ``@`` copied the
  strided states before each matmul) and now holds them as ``[k, B, Ns, Di]``:
  ``python benchmarks/before_after.py --name scan_layout --before 1f83cea smamba:ETTh1:96 smamba:Weather:96``
  (first run as ``scan_layout.py``, this script's earlier name);
- ``flowformer_decoder``: the Flowformer forecaster's last decoder layer, which in evaluation computed all
  ``label + H`` positions and now computes the H that are read:
  ``python benchmarks/before_after.py --name flowformer_decoder --before 7f1e1df --steps 10 flowformer:ETTh1:96``;
- ``adam_blocks_olinear``: Adam on the CPU, which ran torch's foreach path and now runs a large weight's update
  block by block (``forecast.train.adam``; the network is unchanged, so eval is noise):
  ``python benchmarks/before_after.py --name adam_blocks_olinear --before e000af1 olinear:ETTh1:96 olinear:Weather:96``;
- ``scan_inplace``: S-Mamba's chunked scan writing its products in place (``Q[1:] *= ...`` had copied each slice
  back onto itself; gu, gd and y through ``out=``):
  ``python benchmarks/before_after.py --name scan_inplace --before 2360570 smamba:ETTh1:96 smamba:Weather:96``.

    python benchmarks/before_after.py --name NAME --before REV [--rounds 3] [--steps 30] CELL ...
        (CELL: model:dataset:horizon, e.g. smamba:ETTh1:96)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, run_subprocess_json, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import hashlib, itertools, json, sys, time
import torch
from forecast.pipeline.run import build
from forecast.resolve import resolve

model, dataset, horizon = sys.argv[1].split(":")
torch.manual_seed(0)
dm, module = build(resolve(model, dataset, {"data.horizon": int(horizon)}), progress=False)
dm.setup("fit"); dm.setup("test")
digest = lambda ts: hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in ts)).hexdigest()[:16]
test = list(dm.test_dataloader())
module.eval()
with torch.inference_mode():
    module._predict(test[0])  # warm-up: the allocator, the thread pool
    t = time.perf_counter()
    preds = [module._predict(b) for b in test]
    eval_s = time.perf_counter() - t
train = list(itertools.islice(iter(dm.train_dataloader()), int(sys.argv[2]) + 1))
opt = module.configure_optimizers()["optimizer"]
module.train()
t = None
for i, b in enumerate(train):
    if i == 1:
        t = time.perf_counter()  # after one warm-up step
    opt.zero_grad(set_to_none=True)
    module.loss_fn(module._predict(b), b["y"]).backward()
    opt.step()
step_s = (time.perf_counter() - t) / (len(train) - 1)
import forecast
print(json.dumps({"source": forecast.__file__, "eval_s": eval_s, "step_s": step_s,
                  "windows": sum(len(p) for p in preds),
                  "forecasts": digest(preds), "weights": digest(module.state_dict().values())}))
"""


def unpack(rev: str, into: Path) -> Path:
    """The source tree at ``rev`` (its ``forecast/`` package and what it imports) in ``into``."""
    got = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "forecast", "configs"], capture_output=True)
    if got.returncode != 0:
        raise SystemExit(f"--before {rev}: git archive failed ({got.stderr.decode().strip()}); give a commit of "
                         "this repository")
    archive = got.stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(tree: Path, cell: str, steps: int) -> dict:
    """The worker's figures for ``cell`` with ``tree``'s ``forecast`` (run from ``tree``, so it comes first on the
    path, before this checkout's editable install)."""
    got = run_subprocess_json(["-c", WORKER, cell, str(steps)], cwd=tree)
    if "error" in got:
        raise SystemExit(f"{cell} in {tree}: {got['error']}")
    assert Path(got.pop("source")).resolve().is_relative_to(tree.resolve()), "the worker imported another tree"
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="the record: benchmarks/results/NAME.{md,json}")
    ap.add_argument("--before", required=True, help="the commit before the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="timed train steps per round (after one warm-up)")
    ap.add_argument("cells", nargs="+", help="model:dataset:horizon, e.g. smamba:ETTh1:96")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"before ({args.before})": unpack(args.before, Path(tmp)), "now": ROOT}
        found: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            for cell in args.cells:
                for name, tree in trees.items():
                    got = run(tree, cell, args.steps)
                    found.setdefault(f"{cell}|{name}", []).append(got)
                    print(r, cell, name, f"eval {got['eval_s']:.2f} s", f"step {1000 * got['step_s']:.1f} ms",
                          got["forecasts"], got["weights"], flush=True)
    rows = []
    for cell in args.cells:
        before, now = (found[f"{cell}|{name}"] for name in trees)
        same = all(b[k] == n[k] for b, n in zip(before, now) for k in ("forecasts", "weights"))
        ev = [statistics.median(x["eval_s"] for x in side) for side in (before, now)]
        st = [1000 * statistics.median(x["step_s"] for x in side) for side in (before, now)]
        rows.append([cell, now[-1]["windows"], f"{ev[0]:.2f}", f"{ev[1]:.2f}", f"{ev[0] / ev[1]:.2f}",
                     f"{st[0]:.1f}", f"{st[1]:.1f}", f"{st[0] / st[1]:.2f}", "yes" if same else "NO"])
    header = ["cell", "test windows", "eval s before", "eval s now", "speed-up", "train step ms before",
              "train step ms now", "speed-up", "same forecasts and weights"]
    path = write_results(
        args.name, f"Before ({args.before}) and after: {', '.join(args.cells)}", md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds, a fresh process per tree and round (imports not timed). "
        "eval: the forward over every test window at the configs' evaluation batch under inference mode; train "
        f"step: zero_grad, loss, backward and Adam over {args.steps} train batches. 'same': the SHA-256 of the test "
        "forecasts and of the weights after the steps agree in every round.")
    print(path.read_text())


if __name__ == "__main__":
    main()
