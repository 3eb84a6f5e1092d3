"""How cheap can a quantile-trained step be? The floor under any spread head, measured beside the point step.

Issue 23 asks quantile training to add at most 15% to a training step. ``probabilistic_cost.py`` measures the
project's head (``forecast/layers/quantile.py``: one ``Linear(L -> H·(Q−1))`` on the lookback). This script asks
what *any* head costs at least: the same model and batches, trained with the pinball loss on

- **head**: the project's quantile model, as ``forecast train --set train.loss=quantile`` builds it;
- **constant spreads**: a head that reads nothing, its gaps one learned number per step and level (softplus,
  summed outward from the median as the project's head does): what the Q outputs, their assembly and the pinball
  loss cost without any spread computation;
- **constant spreads, fused loss**: the same, with the assembly and the pinball loss one autograd node whose
  gradient is computed in its forward (``∂ρ_q/∂ŷ = 1[y < ŷ] − q``), so the backward pass is a multiply and the
  gaps' running sums: the floor under any head written in PyTorch's eager ops.

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


def constant_spreads(quantile_model, fused: bool = False):  # noqa: ANN001, ANN201
    """The project's quantile model with its spread head replaced by one learned gap per step and level, broadcast
    over the windows and variates (a head that reads nothing: the softplus once per step and level, not per window
    and variate), assembled as the project's levels are (``forecast.layers.quantile.assemble``). ``fused``: its
    forward returns ``(median, gaps)`` instead, for ``fused_loss``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from forecast.layers.quantile import assemble

    class ConstantSpreads(nn.Module):
        def __init__(self, point: nn.Module, horizon: int, n_spreads: int, median_index: int) -> None:
            super().__init__()
            self.point, self.m = point, median_index
            self.gap = nn.Parameter(torch.zeros(horizon, 1, n_spreads))

        def forward(self, x, x_mark=None, y_mark=None, future=None):  # noqa: ANN001, ANN201
            median = self.point(x, x_mark, y_mark, future)  # [B, H, N]
            gaps = F.softplus(self.gap)  # [H, 1, Q - 1]
            return (median, gaps) if fused else assemble(median, gaps, self.m)

    q = quantile_model
    return ConstantSpreads(q.point, q.horizon, q.n_spreads, q.median_index)


def fused_loss(levels, median_index: int):  # noqa: ANN001, ANN201
    """The mean pinball loss of ``(median [B, H, N], gaps)`` at ``levels`` as one autograd node: the levels
    assembled as the project's head assembles them, the gradient kept from the forward."""
    import torch

    from forecast.layers.quantile import assemble

    m = median_index

    class FusedPinball(torch.autograd.Function):
        @staticmethod
        def forward(ctx, median, gaps, y):  # noqa: ANN001, ANN205
            u = y.unsqueeze(-1) - assemble(median, gaps, m)
            w = (u < 0).to(u.dtype) - levels  # the pinball loss's gradient in each prediction
            ctx.save_for_backward(w)
            ctx.gaps_shape = gaps.shape
            return -(u * w).mean()

        @staticmethod
        def backward(ctx, g):  # noqa: ANN001, ANN205
            (w,) = ctx.saved_tensors
            d = w * (g / w.numel())
            below = -torch.cumsum(d[..., :m], -1).flip(-1)  # gap i moves every level below it
            above = torch.cumsum(d[..., m + 1:].flip(-1), -1).flip(-1)
            d_gaps = torch.cat([below, above], -1)
            return d[..., m], d_gaps.sum_to_size(ctx.gaps_shape), None  # broadcast gaps: their gradients summed

    return lambda pred, y: FusedPinball.apply(pred[0], pred[1], y)


def check_fused(module, reference, batch) -> None:  # noqa: ANN001
    """The fused loss gives the reference loss's value and gradients on ``batch`` (else the floor is of something
    else)."""
    import torch

    from forecast.layers.quantile import assemble

    params = list(module.model.parameters())
    fused = module.loss_fn(module._predict(batch), batch["y"])
    grads = torch.autograd.grad(fused, params)
    median, gaps = module._predict(batch)
    plain = reference(assemble(median, gaps, module.model.m), batch["y"])
    want = torch.autograd.grad(plain, params)
    assert torch.allclose(fused, plain, rtol=1e-6, atol=1e-7), (float(fused), float(plain))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(grads, want)), "fused gradients differ"


def _stepper(module, batches):  # noqa: ANN001, ANN202
    """A function timing one pass of ``module``'s training steps over ``batches``: seconds per step."""
    optimizer = module.configure_optimizers()["optimizer"]  # after any head swap: its parameters too
    return lambda bs=batches: step_seconds(module, optimizer, bs)


def measure(cell: str, rounds: int, steps: int) -> dict:
    from forecast.pipeline.run import build

    variants = {}
    for name in ("point", "head", "constant spreads", "constant spreads, fused loss"):
        cfg = twin_config(cell, "mse" if name.startswith("point") else "quantile")
        dm, module = build(cfg, progress=False)
        dm.setup("fit")
        batches = list(itertools.islice(iter(dm.train_dataloader()), steps))
        if name == "constant spreads":
            module.model = constant_spreads(module.model)
        elif name.endswith("fused loss"):
            reference = module.loss_fn
            levels, m = module.model.quantiles, module.model.median_index
            module.model = constant_spreads(module.model, fused=True)
            module.loss_fn = fused_loss(levels, m)
            check_fused(module, reference, batches[0])
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
        "the Q outputs, their assembly and the pinball loss cost by themselves; 'fused loss': the same with the "
        "assembly and the loss one autograd node (its value and gradients checked against the plain loss first). "
        "Target (issue 23): quantile training adds at most 15% to a training step.")
    print(path.read_text())


if __name__ == "__main__":
    main()
