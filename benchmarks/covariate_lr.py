"""The Linear family's covariate-map lr (``train.covariate_lr``), chosen on validation (issue 24).

At the model's own lr, DLinear's covariate map overfits from the first epoch: on ETTh1 (target OT, H=96) MS doubled
S's test MSE (benchmarks/results/covariates.md of 2026-12-03). This trains DLinear S once per cell, then MS and MS
plus the calendar at each candidate lr (``same`` = the model's lr, the old behaviour), and picks the candidate with
the smallest geometric mean of best-val-loss / S's best-val-loss over every MS cell. Test MSE is printed beside it,
never read by the choice. Results: ``benchmarks/results/covariate_lr.{md,json}``.

    python benchmarks/covariate_lr.py
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402
from covariates import SETTINGS, _train  # noqa: E402

CELLS = ("ETTh1", "Weather")
CANDIDATES = ("same", 1e-4, 1e-5, 1e-6, 1e-7)


def main() -> None:
    rows, found, ratios = [], [], {c: [] for c in CANDIDATES}
    with tempfile.TemporaryDirectory(prefix="covariate-lr-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for dataset in CELLS:
            s = _train(uri, "dlinear", dataset, {"data.horizon": 96, **SETTINGS["S"]})
            rows.append([dataset, "S", "-", f"{s['best_val_loss']:.5f}", "1.000", f"{s['test_mse']:.5f}", "1.000"])
            found.append({"dataset": dataset, "setting": "S", "metrics": s})
            for setting in ("MS (past covariates)", "MS + calendar (future)"):
                for cand in CANDIDATES:
                    sets = {"data.horizon": 96, **SETTINGS[setting]}
                    if cand != "same":
                        sets["train.covariate_lr"] = cand
                    else:  # the model's lr for the covariate map too: how it was before train.covariate_lr
                        from forecast.resolve import resolve

                        sets["train.covariate_lr"] = resolve("dlinear", dataset, {}).train.lr
                    m = _train(uri, "dlinear", dataset, sets)
                    val, test = m["best_val_loss"] / s["best_val_loss"], m["test_mse"] / s["test_mse"]
                    ratios[cand].append(val)
                    rows.append([dataset, setting, str(cand), f"{m['best_val_loss']:.5f}", f"{val:.3f}",
                                 f"{m['test_mse']:.5f}", f"{test:.3f}"])
                    found.append({"dataset": dataset, "setting": setting, "covariate_lr": cand, "metrics": m})
                    print(dataset, setting, cand, round(val, 3), round(test, 3), flush=True)
    score = {c: math.exp(sum(map(math.log, r)) / len(r)) for c, r in ratios.items()}
    best = min(score, key=score.get)
    header = ["dataset", "setting", "covariate_lr", "best val loss", "val / S", "test MSE", "test / S"]
    choice = md_table(["covariate_lr", "geometric mean of val / S over the MS cells"],
                      [[str(c), f"{v:.3f}"] for c, v in score.items()])
    path = write_results("covariate_lr", "DLinear's covariate-map lr, chosen on validation",
                         md_table(header, rows) + "\n\n## The choice (validation only)\n\n" + choice
                         + f"\n\nChosen: **{best}**.", {"cells": found, "score": score, "chosen": best},
                         "DLinear at its configs' defaults, H=96, target OT; S: the target alone; MS: every other "
                         "column as a past covariate; calendar: the time features as future covariates. 'same' is the "
                         "model's lr (ETTh1 0.005, Weather 0.0001). Test columns are reported, not used.")
    print(path.read_text())


if __name__ == "__main__":
    main()
