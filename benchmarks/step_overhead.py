"""Where a training step's time goes: the same DLinear (or any model's) steps as a plain PyTorch loop, as a plain loop
over the DataModule's loader, and through Lightning with and without parts of its per-step work, interleaved.

Variants (each one epoch of the train split, validation cut to 2 batches, the same model and loader settings):

- ``plain, pre-gathered``: a loop over batches gathered beforehand: zero_grad, forward, loss, backward, Adam step;
- ``plain, DataModule loader``: the same loop reading the DataModule's shuffled loader (the data pipeline's share);
- ``Lightning``: ``Trainer.fit`` of the ForecastModule as ``forecast train`` builds it (no logger, no checkpoint);
- ``Lightning, per-step log``: the same with ``self.log('train_loss', ..., on_epoch=True)`` at every step, as
  ForecastModule did before it summed the epoch's loss itself (logging's share).

Medians of ms per step over interleaved rounds. Results: ``benchmarks/results/step_overhead.{md,json}``.

    python benchmarks/step_overhead.py [--rounds 3] [--model dlinear] [--seq-len 336]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import etth1_cell, md_table, step_seconds, write_results  # noqa: E402


def _plain(module, batches) -> float:  # noqa: ANN001
    import torch

    return step_seconds(module, torch.optim.Adam(module.parameters(), lr=module.cfg.lr), batches)


def _lightning(cfg, dm, module, variant: str) -> float:  # noqa: ANN001
    from forecast.train import make_trainer

    if variant == "per-step log":
        step = module.training_step

        def logged(batch, batch_idx):  # noqa: ANN001, ANN202
            loss = step(batch, batch_idx)
            module.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["x"].shape[0],
                       sync_dist=True)
            return loss

        module.training_step = logged
    train_cfg = dataclasses.replace(cfg.train, epochs=1, limit_val_batches=2)
    trainer = make_trainer(train_cfg, [], quiet=True)
    steps = len(dm.train_dataloader())
    t = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return (time.perf_counter() - t) / steps


def measure(model: str, seq_len: int, rounds: int) -> dict[str, list[float]]:
    variants = ["plain, pre-gathered", "plain, DataModule loader", "Lightning", "Lightning, per-step log"]
    out: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds + 1):  # round 0 warms up
        for v in variants:
            cfg, dm, module = etth1_cell(model, seq_len)
            if v == "plain, pre-gathered":
                got = _plain(module, list(dm.train_dataloader()))
            elif v == "plain, DataModule loader":
                got = _plain(module, dm.train_dataloader())
            else:
                got = _lightning(cfg, dm, module, "per-step log" if v.endswith("per-step log") else "")
            if r:
                out[v].append(1000 * got)
                print(v, f"{1000 * got:.2f} ms/step", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="dlinear")
    ap.add_argument("--seq-len", type=int, default=336)
    a = ap.parse_args()
    found = measure(a.model, a.seq_len, a.rounds)
    floor = statistics.median(found["plain, pre-gathered"])
    rows = [[v, f"{statistics.median(ms):.2f}", f"{statistics.median(ms) / floor:.2f}"] for v, ms in found.items()]
    path = write_results(
        f"step_overhead_{a.model}", f"Where a {a.model} training step's time goes (ETTh1, L={a.seq_len}, H=96)",
        md_table(["variant", "ms/step (median)", "x plain"], rows), found,
        f"Medians over {a.rounds} interleaved rounds of one epoch each; the Lightning variants validate 2 batches.")
    print(path.read_text())


if __name__ == "__main__":
    main()
