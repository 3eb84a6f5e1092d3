"""Evaluating every test window: forecast's test pass against Time-Series-Library's own ``test()``, side by side.

TSLib side: its ``Exp_Long_Term_Forecast(args).test(setting)`` from a checkout (``--tslib PATH``, e.g. ``git
archive`` of thuml/Time-Series-Library), run.py's defaults with the script's settings (ETTh1, M, L=96, label 48,
H=96, batch 32, ``timeF`` marks) and ``--num_workers`` 0 and its default 10. Its test() builds the test loader
(reads the CSV, fits the scaler), forecasts batch by batch into numpy, draws a PDF every 20 batches, computes
MSE/MAE and saves metrics, predictions and targets. Modules it imports only for other tasks (sktime, Hugging Face
datasets, patoolib, reformer_pytorch, einops) are stubbed; ``cwd`` is a scratch folder holding a link to its
``models/`` (what its model scan reads) and the ETTh1 CSV.

forecast side: ``Trainer.test`` of the LightningModule as ``forecast train`` runs it after fitting (every window,
the config's evaluation batch, MSE/MAE standardized and in original units, per-step MSE, MASE, conformal coverage
and CRPS at the calibrated widths), timed from the call to its return; the DataModule is built beforehand, as in a run.

Both sides evaluate untrained models of the same architecture (speed does not depend on the weights); each side's
MSE over its own windows is reported so the window count is visibly the same (2,785). Medians over interleaved
rounds. Results: ``benchmarks/results/eval_speed.{md,json}``.

``--models all`` adds every other registered model. TSLib has none of them (OLinear, S-Mamba, Flowformer,
iFlowformer, Linear, NLinear, the naive baselines), so its test() evaluates forecast's own network, the same
weights as forecast's pass (``exp.model`` replaced; TSLib's call ``model(x, x_mark, dec_inp, y_mark)`` passes the
horizon's marks on): the same procedure as for its own models, and both MSEs must then agree (the same numbers).
Results: ``benchmarks/results/eval_speed_all.{md,json}``.

``--official`` adds TSLib's test() at the test batch of each model's official code (``OFFICIAL_TEST_BATCH``): the
iTransformer repository, which S-Mamba's and the Flowformer runs' code is, tests one window at a time; OLinear's
scripts 16. Results: ``benchmarks/results/eval_speed_official.{md,json}`` (with ``--name official``).

    python benchmarks/eval_speed.py --tslib /path/to/Time-Series-Library [--rounds 3] [--models all]
        [--only MODEL ...] [--name NAME] [--official]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import etth1_cell, md_table, write_results  # noqa: E402

from _tslib import NAMES as MODELS, args as tslib_args, prepare, quiet_stdout  # noqa: E402


HORIZON = 96  # tslib_args' pred_len
# The batch each model's official code tests with (shared/design/model_specs.md §0.5): thuml/iTransformer's
# data_factory sets ``batch_size = 1  # bsz=1 for evaluation`` for the test split, and S-D-Mamba and the
# Flowformer/iFlowformer runs are that code; OLinear's scripts pass ``--test_batch_size 16``. ``--official``
# times TSLib's test() at that batch too: what a user of the official code waits for (its test() is TSLib's).
OFFICIAL_TEST_BATCH = {"itransformer": 1, "iflowformer": 1, "smamba": 1, "flowformer": 1, "olinear": 16}


def borrowed(net, horizon: int):  # noqa: ANN001, ANN201
    """forecast's network under TSLib's call ``model(x, x_mark, dec_inp, y_mark)`` (y_mark: label + horizon rows)."""
    import torch

    class Borrowed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x, x_mark, dec_inp, y_mark):  # noqa: ANN001, ANN202, ARG002
            return self.net(x, x_mark, y_mark[:, -horizon:])

    return Borrowed()


def tslib_test(scratch: Path, model: str, workers: int, net=None, batch: int = 32  # noqa: ANN001
               ) -> tuple[float, float, int]:
    """(seconds, MSE, windows) of TSLib's own test() on untrained weights (``net``: forecast's network in its
    place), at ``batch`` windows a batch, its output captured."""
    from exp.exp_long_term_forecasting import Exp_Long_Term_Forecast

    # With ``net``, the experiment is built around a DLinear (cheap) whose place the borrowed network then takes.
    settings = tslib_args("DLinear" if net is not None else model, workers, scratch)
    settings.batch_size = batch  # its test loader's batch (drop_last off: every window at any size)
    exp = Exp_Long_Term_Forecast(settings)
    if net is not None:
        exp.model = borrowed(net, HORIZON)
    t = time.perf_counter()
    with quiet_stdout() as buf:
        exp.test(f"{model}_w{workers}")
    seconds = time.perf_counter() - t
    import matplotlib.pyplot as plt

    plt.close("all")  # its visual() leaves every figure open
    out = buf.getvalue()
    windows = int(out.split("test shape: (")[1].split(",")[0])
    return seconds, float(out.split("mse:")[1].split(",")[0]), windows


def forecast_test(model: str, made=None) -> tuple[float, float, int]:  # noqa: ANN001
    """(seconds, MSE, windows) of forecast's test pass on an untrained model with calibrated intervals (``made``:
    what :func:`etth1_cell` returned, else built here)."""
    import torch

    from forecast.conformal import calibrate
    from forecast.train import make_trainer

    cfg, dm, module = made if made is not None else etth1_cell(model)
    widths, crps = calibrate(module.model, dm.dataset("val"), cfg.train.eval_batch_size, module.point,
                             cfg.train.intervals)
    module.intervals = (cfg.train.intervals, torch.from_numpy(widths))
    module.crps_widths = torch.from_numpy(crps)
    trainer = make_trainer(cfg.train, [], quiet=True)
    t = time.perf_counter()
    trainer.test(module, datamodule=dm, verbose=False)
    seconds = time.perf_counter() - t
    return seconds, module.test_metrics["test_mse"], int(module.test_metrics["test_windows"])


def record(found: dict[str, dict[str, list]], key: str, got: tuple[float, float, int]) -> None:
    """Append one measurement ``(seconds, MSE, windows)`` to ``found[key]``."""
    rec = found.setdefault(key, {"s": [], "mse": [], "windows": []})
    for k, v in zip(("s", "mse", "windows"), got):
        rec[k].append(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tslib", type=Path, required=True, help="a checkout of thuml/Time-Series-Library")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", choices=("tslib", "all"), default="tslib",
                    help="tslib: the models TSLib has (DLinear, iTransformer); all: every registered model")
    ap.add_argument("--only", nargs="+", metavar="MODEL", help="these registered models alone")
    ap.add_argument("--name", help="results/eval_speed_NAME instead of the default file")
    ap.add_argument("--official", action="store_true",
                    help="also TSLib's test() at each model's official test batch (1, or 16 for OLinear)")
    args = ap.parse_args()
    scratch = prepare(args.tslib)
    import torch

    from forecast.models import model_names

    torch.manual_seed(0)
    models = list(MODELS) + ([m for m in model_names() if m not in MODELS] if args.models == "all" else [])
    models = args.only or models
    native = {f"TSLib test(), {w} workers": (lambda m, w=w: tslib_test(scratch, MODELS[m], w)) for w in (0, 10)}
    found: dict[str, dict[str, list]] = {}
    for _ in range(args.rounds + 1):  # round 0: warm-up (imports, page cache)
        for model in models:
            if model in MODELS:
                net = None  # TSLib's own
                sides = [*native.items(), ("forecast test pass", lambda m: forecast_test(m))]
            else:  # one untrained network for both sides: the same weights, so the same MSE
                made = etth1_cell(model)
                net = made[2].model
                sides = [("TSLib test(), 0 workers", lambda m, net=net: tslib_test(scratch, m, 0, net)),
                         ("forecast test pass", lambda m, made=made: forecast_test(m, made))]
            if args.official and model in OFFICIAL_TEST_BATCH:
                b = OFFICIAL_TEST_BATCH[model]
                sides.insert(-1, (f"TSLib test(), batch {b} (the official code's), 0 workers",
                                  lambda m, b=b, net=net: tslib_test(scratch, MODELS.get(m, m), 0, net, b)))
            for side, fn in sides:
                got = fn(model)
                record(found, f"{model}|{side}", got)
                print(model, side, f"{got[0]:.2f} s", flush=True)
    rows = []
    for model in models:
        ours = statistics.median(found[f"{model}|forecast test pass"]["s"][1:])
        for side in [key.split("|", 1)[1] for key in found if key.startswith(f"{model}|")]:
            rec = found[f"{model}|{side}"]
            med = statistics.median(rec["s"][1:])
            net = "TSLib's" if model in MODELS and side.startswith("TSLib") else "forecast's"
            rows.append([model, side, net, rec["windows"][-1], f"{rec['mse'][-1]:.6f}", f"{med:.2f}",
                         f"{med / ours:.2f}"])
    header = ["model", "evaluation", "network", "windows", "MSE (last round)", "median s", "x forecast's time"]
    path = write_results(
        f"eval_speed_{args.name}" if args.name else "eval_speed" if args.models == "tslib" else "eval_speed_all",
        "Evaluating every ETTh1 test window (L=96, H=96): forecast against TSLib's test()",
        md_table(header, rows), found,
        f"Medians over {args.rounds} interleaved rounds after a warm-up. TSLib's test() reads and scales the CSV, "
        "runs batches of 32 (or the official code's test batch where named: 1 for the iTransformer repository and "
        "the models run with its code, 16 for OLinear; shuffle off, drop_last off: every window), draws a PDF "
        "every 20 batches and saves "
        "predictions; forecast's pass computes more (original units, per-step MSE, MASE, coverage of each interval, "
        "CRPS) over the configs' evaluation batches (256; 32 for Flowformer, benchmarks/eval_batch.py). Untrained "
        "weights on both sides (speed only); the windows column shows both evaluate the same 2,785 windows. "
        "Network 'forecast's': TSLib's test() runs forecast's untrained network, the one forecast's pass then "
        "evaluates (TSLib has no such model), so the two MSEs agree. Target (issue 27): TSLib's time at least 2x "
        "forecast's.")
    print(path.read_text())


if __name__ == "__main__":
    main()
