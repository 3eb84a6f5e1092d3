"""How cheap can a quantile-trained step be? The floor under any spread head, measured beside the point step.

Issue 23 asks quantile training to add at most 15% to a training step. ``probabilistic_cost.py`` measures the
project's head (``forecast/layers/quantile.py``: one ``Linear(L -> H·(Q−1))`` on the lookback). This script asks
what *any* head costs at least: the same model and batches, trained with the pinball loss on

- **head**: the project's quantile model, as ``forecast train --set train.loss=quantile`` builds it;
- **constant spreads**: a head that reads nothing, its gaps one learned number per step and level (softplus,
  summed outward from the median as the project's head does): what the Q outputs, their assembly and the pinball
  loss cost without any spread computation.

Each variant's step is zero_grad, loss, backward, and the run's own Adam (``foreach``) over the same fixed train
batches; medians over interleaved rounds; ratios to the point step of the same run.
Results: ``benchmarks/results/quantile_floor.{md,json}``.

    python benchmarks/quantile_floor.py [--rounds 15] [--steps 50] [CELL ...]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, step_seconds, write_results  # noqa: E402
from probabilistic_cost import twin_config  # noqa: E402


def constant_spreads(quantile_model):  # noqa: ANN001, ANN201
    """The project's quantile model with its spread head replaced by one learned gap per step and level. Its own
    assembly rather than ``QuantileForecaster``'s: that one applies the softplus per window and variate, which a
    head that reads nothing need not, and a floor should not count. The outer levels sit on the detached median,
    as the project's do."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConstantSpreads(nn.Module):
        def __init__(self, point: nn.Module, horizon: int, n_spreads: int, median_index: int) -> None:
            super().__init__()
            self.point, self.m = point, median_index
            self.gap = nn.Parameter(torch.zeros(horizon, 1, n_spreads))

        def forward(self, x, x_mark=None, y_mark=None, future=None):  # noqa: ANN001, ANN201
            centre = self.point(x, x_mark, y_mark, future).unsqueeze(-1)  # [B, H, N, 1]
            gaps = F.softplus(self.gap)  # [H, 1, Q - 1], broadcast over the windows and variates
            below = centre.detach() - torch.cumsum(gaps[..., : self.m], -1)
            above = centre.detach() + torch.cumsum(gaps[..., self.m:], -1)
            return torch.cat([below.flip(-1), centre, above], dim=-1)

    q = quantile_model
    return ConstantSpreads(q.point, q.horizon, q.n_spreads, q.median_index)


def _stepper(module, batches):  # noqa: ANN001, ANN202
    """A function timing one pass of ``module``'s training steps over ``batches``: seconds per step."""
    optimizer = module.configure_optimizers()["optimizer"]  # after any head swap: its parameters too
    return lambda bs=batches: step_seconds(module, optimizer, bs)


def measure(cell: str, rounds: int, steps: int) -> dict:
    from forecast.pipeline.run import build

    variants = {}
    for name in ("point", "head", "constant spreads"):
        cfg = twin_config(cell, "mse" if name.startswith("point") else "quantile")
        dm, module = build(cfg, progress=False)
        dm.setup("fit")
        if name == "constant spreads":
            module.model = constant_spreads(module.model)
        batches = list(itertools.islice(iter(dm.train_dataloader()), steps))
        run = _stepper(module, batches)
        run(batches[:3])  # warm-up: the allocator, the thread pool
        variants[name] = run
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            times[name].append(run())
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {k: v / med["point"] for k, v in med.items()}
    return {"cell": cell, "median_s": med, "all_s": times, "ratio_to_point": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=50, help="train batches timed per round and variant")
    ap.add_argument("cells", nargs="*", default=["dlinear:ETTh1:96"])
    args = ap.parse_args()
    found, rows = [], []
    for cell in args.cells:
        r = measure(cell, args.rounds, args.steps)
        found.append(r)
        for name, s in r["median_s"].items():
            rows.append([cell, name, f"{1000 * s:.3f}", f"{r['ratio_to_point'][name]:.3f}"])
            print(rows[-1], flush=True)
    header = ["cell", "variant", "step ms", "/ point step"]
    path = write_results(
        "quantile_floor", "The floor under a quantile-trained step: the project's head against a head that reads "
        "nothing", md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds of {args.steps} train steps per variant (zero_grad, loss, "
        "backward, Adam foreach). 'constant spreads': the median and Q-1 learned gaps per step, no input read: what "
        "the Q outputs, their assembly and the pinball loss cost by themselves. Target (issue 23): quantile "
        "training adds at most 15% to a training step.")
    print(path.read_text())


if __name__ == "__main__":
    main()
