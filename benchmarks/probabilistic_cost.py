"""What probabilistic forecasts cost: a quantile-trained step against the point step, and conformal calibration
against one validation pass, measured side by side in one interleaved run.

For each cell (``model:dataset:horizon``; default DLinear and iTransformer on ETTh1 at H=96, the configs'
defaults), the point model and its quantile twin (``train.loss=quantile``, the default levels 0.1/0.5/0.9) are built
by ``forecast.pipeline.build`` exactly as ``forecast train`` builds them. Then, in rounds that alternate the two:

- **training step**: ``zero_grad`` + the module's loss on its own forward + ``backward`` + the optimizer's step
  (the module's own: Adam with ``foreach``), over the same fixed train batches (the DataModule's shuffled loader,
  so the batches a run sees);
- **calibration**: ``forecast.conformal.calibrate`` (the residuals of every validation window, then the half-widths
  at the asked-for and the CRPS levels: what ``train`` does after fitting, from the best epoch's validation
  forecasts that the run kept), against one validation pass as the Trainer runs it each epoch (``validation_step``
  over the val loader: forward, loss, and keeping the point forecast); and calibration with a pass of its own, as a
  run too big to keep its forecasts calibrates.

Medians over rounds; the ratios are the figures (timings on a shared machine move, ratios taken side by side less).
Results: ``benchmarks/results/probabilistic_cost.{md,json}``.

Then, per cell, whole training epochs of each variant as ``forecast train`` runs them under Lightning (the loop with
its data loading and per-step hooks, and the validation pass): what a user waits for, beside the bare step.

    python benchmarks/probabilistic_cost.py [--rounds 5] [--steps 30] [--epoch-rounds 2] [--epochs 3] [--name NAME]
        [CELL ...]   (other cells: results/probabilistic_cost_NAME)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, step_seconds, timed_epochs, write_results  # noqa: E402

CELLS = ["dlinear:ETTh1:96", "itransformer:ETTh1:96"]


def _val_pass(module, loader) -> tuple[float, list]:  # noqa: ANN001
    """One validation pass through the module's own hooks, as the Trainer runs them (forward, the summed loss, the
    point forecast kept for calibration): its seconds and the kept forecasts."""
    import torch

    module.eval()
    module.keep_val_forecasts = True  # as train sets it for a run of one process
    t = time.perf_counter()
    with torch.no_grad():
        module.on_validation_epoch_start()
        for i, batch in enumerate(loader):
            module.validation_step(batch, i)
    return time.perf_counter() - t, module.val_forecasts


def _calibration_seconds(module, dm, cfg, kept=None) -> float:  # noqa: ANN001
    """``calibrate`` as ``train`` runs it after fitting: from the best epoch's kept validation forecasts, or (``kept``
    None: a run too big to keep them) with a pass of its own."""
    from forecast.conformal import calibrate

    t = time.perf_counter()
    calibrate(module.model, dm.dataset("val"), cfg.train.eval_batch_size, module.point, cfg.train.intervals, kept)
    return time.perf_counter() - t


def twin_config(cell: str, loss: str, **sets: object):  # noqa: ANN201
    """The resolved config of ``cell`` (``model:dataset:horizon``): the point model (``mse``, the configs' loss) or
    its quantile twin, with ``sets`` on top."""
    from forecast.resolve import resolve

    model, dataset, horizon = cell.split(":")
    return resolve(model, dataset, {"data.horizon": int(horizon), **({"train.loss": loss} if loss != "mse" else {}),
                                    **sets})


def epoch_seconds(cell: str, rounds: int, epochs: int) -> dict[str, float]:
    """The median training epoch (loop and validation pass, as ``forecast train`` runs them under Lightning) of the
    point model and of its quantile twin: ``rounds`` interleaved runs each of ``epochs`` epochs, the epochs after
    the first."""
    seen: dict[str, list[float]] = {"mse": [], "quantile": []}
    for _ in range(rounds):
        for loss in seen:
            cfg = twin_config(cell, loss, **{"train.epochs": epochs, "train.patience": epochs + 1})
            seen[loss].append(statistics.median(timed_epochs(cfg)["epoch"][1:]))
    return {loss: statistics.median(v) for loss, v in seen.items()}


def measure(cell: str, rounds: int, steps: int) -> dict:
    import itertools

    import torch

    from forecast.pipeline.run import build

    built = {}
    for loss in ("mse", "quantile"):
        cfg = twin_config(cell, loss)
        dm, module = build(cfg, progress=False)
        dm.setup("fit")
        batches = list(itertools.islice(iter(dm.train_dataloader()), steps))
        optimizer = module.configure_optimizers()["optimizer"]  # the run's own (Adam, foreach)
        step_seconds(module, optimizer, batches[:2])  # warm-up: allocator, thread pool
        built[loss] = (cfg, dm, module, optimizer, batches)
    times: dict[str, list[float]] = {k: [] for k in ("step point", "step quantile", "val pass", "calibration",
                                                      "calibration with a pass")}
    for _ in range(rounds):
        for loss in ("mse", "quantile"):
            cfg, dm, module, optimizer, batches = built[loss]
            times[f"step {'point' if loss == 'mse' else 'quantile'}"].append(step_seconds(module, optimizer, batches))
        cfg, dm, module, _, _ = built["mse"]
        seconds, kept = _val_pass(module, dm.val_dataloader())
        times["val pass"].append(seconds)
        times["calibration"].append(_calibration_seconds(module, dm, cfg, kept))
        times["calibration with a pass"].append(_calibration_seconds(module, dm, cfg))
    med = {k: statistics.median(v) for k, v in times.items()}
    cfg, dm = built["mse"][0], built["mse"][1]
    return {"cell": cell, "median_s": med, "all_s": times, "batch_size": cfg.train.batch_size,
            "eval_batch_size": cfg.train.eval_batch_size, "val_windows": len(dm.dataset("val")),
            "quantile_step_ratio": med["step quantile"] / med["step point"],
            "calibration_over_val_pass": med["calibration"] / med["val pass"],
            "pass_calibration_over_val_pass": med["calibration with a pass"] / med["val pass"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30, help="train batches timed per round and variant")
    ap.add_argument("--epoch-rounds", type=int, default=2, help="interleaved training runs per variant (0: none)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training run; the first is not counted")
    ap.add_argument("--name", default="", help="write results/probabilistic_cost_NAME (other cells, same columns)")
    ap.add_argument("cells", nargs="*", default=CELLS)
    args = ap.parse_args()
    found, rows = [], []
    for cell in args.cells:
        r = measure(cell, args.rounds, args.steps)
        if args.epoch_rounds:
            r["epoch_s"] = epoch_seconds(cell, args.epoch_rounds, args.epochs)
            r["quantile_epoch_ratio"] = r["epoch_s"]["quantile"] / r["epoch_s"]["mse"]
        found.append(r)
        m, e = r["median_s"], r.get("epoch_s", {})
        rows.append([cell, r["batch_size"], f"{1000 * m['step point']:.2f}", f"{1000 * m['step quantile']:.2f}",
                     f"{r['quantile_step_ratio']:.3f}", r["val_windows"], f"{1000 * m['val pass']:.0f}",
                     f"{1000 * m['calibration']:.0f}", f"{r['calibration_over_val_pass']:.2f}",
                     f"{r['pass_calibration_over_val_pass']:.2f}",
                     *((f"{e['mse']:.2f}", f"{e['quantile']:.2f}", f"{r['quantile_epoch_ratio']:.3f}") if e else
                       ("", "", ""))])
        print(rows[-1], flush=True)
    header = ["cell", "batch", "point step ms", "quantile step ms", "quantile / point", "val windows",
              "val pass ms", "calibration ms", "calibration / val pass", "with its own pass / val pass",
              "point epoch s", "quantile epoch s", "quantile / point epoch"]
    path = write_results(
        "probabilistic_cost" + (f"_{args.name}" if args.name else ""), "The cost of probabilistic forecasts: quantile training steps and conformal calibration",
        md_table(header, rows), found,
        f"Steps: medians over {args.rounds} interleaved rounds of {args.steps} train steps per variant. Epochs: "
        f"{args.epoch_rounds} interleaved training runs per variant of {args.epochs} epochs under Lightning (the loop "
        "and the validation pass, as `forecast train` runs them), the median epoch after the first. Targets "
        "(issue 23): quantile training adds at most 15% to a training step (ratio <= 1.15); calibration costs at most "
        "one extra pass over the validation windows (ratio <= 1, within noise). Calibration runs once per run, "
        "after the last epoch; the val pass runs every epoch.")
    print(path.read_text())


if __name__ == "__main__":
    main()
