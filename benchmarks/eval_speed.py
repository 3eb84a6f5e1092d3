"""Evaluating every test window: forecast's test pass against Time-Series-Library's own ``test()``, side by side.

TSLib side: its ``Exp_Long_Term_Forecast(args).test(setting)`` from a checkout (``--tslib PATH``, e.g. ``git
archive`` of thuml/Time-Series-Library), run.py's defaults with the script's settings (ETTh1, M, L=96, label 48,
H=96, batch 32, ``timeF`` marks) and ``--num_workers`` 0 and its default 10. Its test() builds the test loader
(reads the CSV, fits the scaler), forecasts batch by batch into numpy, draws a PDF every 20 batches, computes
MSE/MAE and saves metrics, predictions and targets. Modules it imports only for other tasks (sktime, Hugging Face
datasets, patoolib, reformer_pytorch, einops) are stubbed; ``cwd`` is a scratch folder holding a link to its
``models/`` (what its model scan reads) and the ETTh1 CSV.

forecast side: ``Trainer.test`` of the LightningModule as ``forecast train`` runs it after fitting (every window,
eval batch 256, MSE/MAE standardized and in original units, per-step MSE, MASE, conformal coverage and CRPS at
the calibrated widths), timed from the call to its return; the DataModule is built beforehand, as in a run.

Both sides evaluate untrained models of the same architecture (speed does not depend on the weights); each side's
MSE over its own windows is reported so the window count is visibly the same (2,785). Medians over interleaved
rounds. Results: ``benchmarks/results/eval_speed.{md,json}``.

    python benchmarks/eval_speed.py --tslib /path/to/Time-Series-Library [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

from _tslib import NAMES as MODELS, args as tslib_args, prepare, quiet_stdout  # noqa: E402


def tslib_test(scratch: Path, model: str, workers: int) -> tuple[float, float, int]:
    """(seconds, MSE, windows) of TSLib's own test() on untrained weights, its output captured."""
    from exp.exp_long_term_forecasting import Exp_Long_Term_Forecast

    exp = Exp_Long_Term_Forecast(tslib_args(model, workers, scratch))
    t = time.perf_counter()
    with quiet_stdout() as buf:
        exp.test(f"{model}_w{workers}")
    seconds = time.perf_counter() - t
    import matplotlib.pyplot as plt

    plt.close("all")  # its visual() leaves every figure open
    out = buf.getvalue()
    windows = int(out.split("test shape: (")[1].split(",")[0])
    return seconds, float(out.split("mse:")[1].split(",")[0]), windows


def forecast_test(model: str) -> tuple[float, float, int]:
    """(seconds, MSE, windows) of forecast's test pass on an untrained model with calibrated intervals."""
    import torch

    from forecast.conformal import calibrate
    from forecast.pipeline.run import build
    from forecast.resolve import resolve
    from forecast.train import make_trainer

    cfg = resolve(model, "ETTh1", {"data.seq_len": 96, "data.horizon": 96})
    dm, module = build(cfg, progress=False)
    widths, crps = calibrate(module.model, dm.dataset("val"), cfg.train.eval_batch_size, module.point,
                             cfg.train.intervals)
    module.intervals = (cfg.train.intervals, torch.from_numpy(widths))
    module.crps_widths = torch.from_numpy(crps)
    trainer = make_trainer(cfg.train, [], quiet=True)
    t = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    seconds = time.perf_counter() - t
    return seconds, module.test_metrics["test_mse"], int(module.test_metrics["test_windows"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tslib", type=Path, required=True, help="a checkout of thuml/Time-Series-Library")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    scratch = prepare(args.tslib)
    import torch

    torch.manual_seed(0)
    sides = {f"TSLib test(), {w} workers": (lambda m, w=w: tslib_test(scratch, MODELS[m], w)) for w in (0, 10)}
    found: dict[str, dict[str, list]] = {}
    for _ in range(args.rounds + 1):  # round 0: warm-up (imports, page cache)
        for model in MODELS:
            for side, fn in [*sides.items(), ("forecast test pass", lambda m: forecast_test(m))]:
                got = fn(model)
                found.setdefault(f"{model}|{side}", {"s": [], "mse": [], "windows": []})
                rec = found[f"{model}|{side}"]
                rec["s"].append(got[0])
                rec["mse"].append(got[1])
                rec["windows"].append(got[2])
                print(model, side, f"{got[0]:.2f} s", flush=True)
    rows = []
    for model in MODELS:
        ours = statistics.median(found[f"{model}|forecast test pass"]["s"][1:])
        for side in [*sides, "forecast test pass"]:
            rec = found[f"{model}|{side}"]
            med = statistics.median(rec["s"][1:])
            rows.append([model, side, rec["windows"][-1], f"{med:.2f}", f"{med / ours:.2f}"])
    header = ["model", "evaluation", "windows", "median s", "x forecast's time"]
    path = write_results(
        "eval_speed", "Evaluating every ETTh1 test window (L=96, H=96): forecast against TSLib's test()",
        md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds after a warm-up. TSLib's test() reads and scales the CSV, "
        "runs batches of 32 (shuffle off, drop_last off: every window), draws a PDF every 20 batches and saves "
        "predictions; forecast's pass computes more (original units, per-step MSE, MASE, coverage of each interval, "
        "CRPS) over batches of 256. Untrained weights on both sides (speed only); the windows column shows both "
        "evaluate the same 2,785 windows. Target (issue 27): TSLib's time at least 2x forecast's.")
    print(path.read_text())


if __name__ == "__main__":
    main()
