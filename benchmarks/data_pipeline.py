"""The data pipeline's share of a DLinear training step (ETTh1, L=336, H=96, batch 32), and the epoch time.

One run, side by side and interleaved: (a) a full epoch of optimizer steps fed by ForecastDataModule's train
loader, (b) the same steps on batches that were gathered into tensors beforehand. share = (a - b) / a.
Then one real Lightning epoch (fit, with validation) through `forecast.pipeline.build`.

Usage: python benchmarks/data_pipeline.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import md_table, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on a shared box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from forecast.resolve import resolve
    from forecast.pipeline import build
    from forecast.train import make_loss, make_trainer

    cfg = resolve("dlinear", "ETTh1", {"data.horizon": 96})
    dm, module = build(cfg, progress=False)
    model, loss_fn = module.model, make_loss("mse")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

    def step(batch: dict) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(batch["x"], batch.get("x_mark"), batch.get("y_mark")), batch["y"]).backward()
        opt.step()

    def epoch_loader() -> float:
        t = time.perf_counter()
        for batch in dm.train_dataloader():
            step(batch)
        return time.perf_counter() - t

    prebuilt = [dict(b) for b in dm.train_dataloader()]  # the same kind of batches, gathered up front

    def epoch_tensors() -> float:
        t = time.perf_counter()
        for batch in prebuilt:
            step(batch)
        return time.perf_counter() - t

    epoch_loader(), epoch_tensors()  # warm-up
    a, b = [], []
    for _ in range(args.repeats):
        a.append(epoch_loader())
        b.append(epoch_tensors())
    ta, tb = statistics.median(a), statistics.median(b)
    share = (ta - tb) / ta
    steps = len(prebuilt)

    # One real epoch through Lightning (train + validation), as `forecast train` runs it.
    from dataclasses import replace

    cfg1 = replace(cfg, train=replace(cfg.train, epochs=1))
    dm1, module1 = build(cfg1, progress=False)
    trainer = make_trainer(cfg1.train, [], quiet=True)
    t = time.perf_counter()
    trainer.fit(module1, datamodule=dm1)
    lightning_epoch = time.perf_counter() - t

    rows = [["DataModule loader", steps, ta, 1000 * ta / steps, ""],
            ["pre-built tensors", steps, tb, 1000 * tb / steps, ""],
            ["data pipeline share", "", "", "", f"{100 * share:.1f}% (target <= 15%)"],
            ["Lightning fit, 1 epoch + validation", steps, lightning_epoch, 1000 * lightning_epoch / steps, ""]]
    table = md_table(["path", "steps", "epoch s (median)", "ms/step", "note"], rows)
    data = {"loader_epoch_s": a, "tensor_epoch_s": b, "share": share, "steps": steps,
            "lightning_epoch_s": lightning_epoch}
    path = write_results("data_pipeline", "Data pipeline share of a DLinear step (ETTh1, L=336, H=96, batch 32)",
                         table, data, f"{args.repeats} interleaved repeats, {args.threads} torch thread(s); medians. Timings on a shared 2-core "
                         "machine are noisy: read the ratio, not the absolute times.")
    print(path.read_text())


if __name__ == "__main__":
    main()
