"""What running Adam block by block saves on the CPU: ``forecast.train.adam.BlockedAdam`` against
``torch.optim.Adam(foreach=True)`` (what ForecastModule used before), interleaved, for each model's own weights.

Per model (ETTh1, L=96, H=96, the configs' defaults, untrained):

- ``update``: the optimizer's step alone over the model's weights with fixed gradients (ms, median of ``--updates``);
- ``train step``: zero_grad, forward, loss, backward and the optimizer's step over the first ``--steps`` training
  batches (ms per step), from the same weights and the same dropout seed on both sides;
- ``same bits``: whether both sides end those steps with the same weights and moments, bit for bit.

Results: ``benchmarks/results/adam_blocks.{md,json}``.

    python benchmarks/adam_blocks.py [--rounds 3] [--models dlinear itransformer smamba olinear flowformer]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import etth1_cell, md_table, step_seconds, write_results  # noqa: E402

STEPS = {"flowformer": 4}  # its step takes seconds on this CPU


def _optimizer(variant: str, params, lr: float):  # noqa: ANN001, ANN202
    import torch

    from forecast.train.adam import BlockedAdam

    return BlockedAdam(params, lr=lr) if variant == "blocked" else torch.optim.Adam(params, lr=lr, foreach=True)


def _update_ms(variant: str, params, updates: int) -> float:  # noqa: ANN001
    import torch

    params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    opt = _optimizer(variant, params, 1e-4)
    opt.step()  # the moments are allocated
    times = []
    for _ in range(updates):
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _train(variant: str, model: str, start: dict, steps: int) -> tuple[float, list]:
    import torch

    cfg, dm, module = etth1_cell(model)
    module.load_state_dict(start)
    batches = list(dm.train_dataloader())[:steps]
    opt = _optimizer(variant, [p for p in module.parameters() if p.requires_grad], cfg.train.lr)
    torch.manual_seed(1)
    ms = 1000 * step_seconds(module, opt, batches)
    ends = [p.detach().clone() for p in module.parameters()]
    ends += [t.clone() for s in opt.state.values() for t in s.values()]
    return ms, ends


def measure(models: list[str], rounds: int, steps: int, updates: int) -> list[dict]:
    import torch

    rows = []
    for model in models:
        torch.manual_seed(0)
        _, _, module = etth1_cell(model)
        start = copy.deepcopy(module.state_dict())
        weights = [p for p in module.parameters() if p.requires_grad]
        found: dict[str, dict[str, list[float]]] = {v: {"update": [], "step": []} for v in ("foreach", "blocked")}
        same = True
        for _ in range(rounds):
            ends = {}
            for variant in ("foreach", "blocked"):
                found[variant]["update"].append(_update_ms(variant, weights, updates))
                ms, ends[variant] = _train(variant, model, start, STEPS.get(model, steps))
                found[variant]["step"].append(ms)
            same &= all(torch.equal(a, b) for a, b in zip(ends["foreach"], ends["blocked"], strict=True))
        med = {v: {k: statistics.median(x) for k, x in d.items()} for v, d in found.items()}
        rows.append({"model": model, "weights": len(weights), "elements": sum(p.numel() for p in weights),
                     "steps": STEPS.get(model, steps), "same_bits": same, "medians": med, "raw": found})
        print(model, med, "same bits" if same else "DIFFERENT BITS", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="training steps per side and round (Flowformer: 4)")
    ap.add_argument("--updates", type=int, default=30, help="timed optimizer steps per side and round")
    ap.add_argument("--models", nargs="+", default=["dlinear", "itransformer", "smamba", "olinear", "flowformer"])
    a = ap.parse_args()
    rows = measure(a.models, a.rounds, a.steps, a.updates)
    table = []
    for r in rows:
        f, b = r["medians"]["foreach"], r["medians"]["blocked"]
        table.append([r["model"], r["weights"], f"{r['elements']:,}", f"{f['update']:.2f}", f"{b['update']:.2f}",
                      f"{f['update'] / b['update']:.2f}", r["steps"], f"{f['step']:.1f}", f"{b['step']:.1f}",
                      f"{f['step'] / b['step']:.2f}", "yes" if r["same_bits"] else "NO"])
    path = write_results(
        "adam_blocks", "Adam block by block on the CPU against torch's foreach Adam (ETTh1, L=96, H=96)",
        md_table(["model", "weights", "elements", "update ms foreach", "update ms blocked", "x faster", "steps",
                  "train step ms foreach", "train step ms blocked", "x faster", "same bits"], table), rows,
        f"Medians over {a.rounds} interleaved rounds. 'update': the optimizer's step alone with fixed gradients "
        f"(median of {a.updates}); 'train step': a plain loop (zero_grad, forward, loss, backward, step) over the "
        "first training batches from the same weights and dropout seed; 'same bits': the weights and both moments "
        "after those steps are equal on both sides in every round.")
    print(path.read_text())


if __name__ == "__main__":
    main()
