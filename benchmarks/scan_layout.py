"""S-Mamba's evaluation and training steps before and after the chunked scan's forward went Di-innermost, side by
side in one run.

``forecast/layers/scan_chunked.py`` once held a chunk's states as ``[k, B, Di, Ns]``: Ns (2 in most official
S-Mamba scripts) innermost, so the discretisation's products and exp ran on pairs, and ``@`` copied the strided
states before each matmul. Its forward now holds them as ``[k, B, Ns, Di]``. This script runs the same worker on
two source trees: ``--before`` (a commit, unpacked with ``git archive`` into a temporary directory) and this
checkout, each in a fresh process per round, rounds interleaved. Per cell (configs' defaults, untrained weights,
seed 0) the worker times

- **eval**: the forward over every test window at the configs' evaluation batch (256), under inference mode;
- **train step**: zero_grad, loss, backward and Adam over the first 30 train batches (dropout on);

and hashes the test forecasts and the weights after those steps, which must agree between the trees to the bit.
Results: ``benchmarks/results/scan_layout.{md,json}``.

    python benchmarks/scan_layout.py [--before 1f83cea] [--rounds 3] [CELL ...]   (CELL: smamba:ETTh1:96)
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
train = list(itertools.islice(iter(dm.train_dataloader()), 31))
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


def run(tree: Path, cell: str) -> dict:
    """The worker's figures for ``cell`` with ``tree``'s ``forecast`` (run from ``tree``, so it comes first on the
    path, before this checkout's editable install)."""
    got = run_subprocess_json(["-c", WORKER, cell], cwd=tree)
    if "error" in got:
        raise SystemExit(f"{cell} in {tree}: {got['error']}")
    assert Path(got.pop("source")).resolve().is_relative_to(tree.resolve()), "the worker imported another tree"
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="1f83cea", help="the commit before the change (default: 1f83cea)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("cells", nargs="*", default=["smamba:ETTh1:96", "smamba:Weather:96"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"before ({args.before})": unpack(args.before, Path(tmp)), "now": ROOT}
        found: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            for cell in args.cells:
                for name, tree in trees.items():
                    got = run(tree, cell)
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
        "scan_layout", "S-Mamba before and after the chunked scan's forward went Di-innermost",
        md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds, a fresh process per tree and round (imports not timed). "
        "eval: the forward over every test window at batch 256 under inference mode; train step: zero_grad, loss, "
        "backward and Adam over 30 train batches. 'same': the SHA-256 of the test forecasts and of the weights "
        "after the steps agree in every round.")
    print(path.read_text())


if __name__ == "__main__":
    main()
