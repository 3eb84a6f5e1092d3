"""Conformal intervals and CRPS at the configs' defaults: coverage against nominal, width, and CRPS per model.

Each cell (``model:dataset:horizon[:loss]``, default DLinear and iTransformer on ETTh1, point and quantile-trained,
DLinear on Weather, and the seasonal naive baseline, all at H=96) trains once through ``forecast.pipeline.train`` at its configs/ defaults into
a temporary store; the table gives test MSE, the 80% and 90% conformal coverage and width (standardized), CRPS
(standardized and in original units) and MASE, beside ProbTS's published CRPS where it has the cell (its Table 1,
context 96, mean of five seeds: read from ProbTS's own image of the table, ``docs/benchmark/supervised_model/figs/
long_bench.jpg`` at microsoft/ProbTS 6f55a2a; it agrees with the transcription in issue 23 to the third digit).
Nothing is tuned, nothing is chosen on test. Results: ``benchmarks/results/intervals.{md,json}``.

    python benchmarks/intervals.py [--name=NAME] [dlinear:ETTh1:96 ...]   (results/intervals_NAME)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

CELLS = ["dlinear:ETTh1:96", "dlinear:ETTh1:96:quantile", "itransformer:ETTh1:96", "itransformer:ETTh1:96:quantile",
         "dlinear:Weather:96", "seasonal_naive:ETTh1:96", "seasonal_naive:Weather:96"]
# ProbTS Table 1 at H=96 for the models run here; its others: ETTh1 PatchTST 0.328, CSDI 0.437, GRU NVP 0.379,
# TimeGrad 0.455; Weather PatchTST 0.087, CSDI 0.068, GRU NVP 0.116, TimeGrad 0.130
PROBTS_CRPS = {("itransformer", "ETTh1", 96): 0.321, ("dlinear", "ETTh1", 96): 0.352,
               ("itransformer", "Weather", 96): 0.089, ("dlinear", "Weather", 96): 0.112}


def main(cells: list[str], suffix: str = "") -> None:
    from forecast.pipeline import TrainOptions, train
    from forecast.resolve import resolve

    rows, found = [], []
    with tempfile.TemporaryDirectory(prefix="intervals-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for cell in cells:
            model, dataset, horizon, *loss = cell.split(":")
            cfg = resolve(model, dataset, {"data.horizon": int(horizon), **({"train.loss": loss[0]} if loss else {})})
            t0 = time.perf_counter()
            res = train(cfg, TrainOptions(tracking_uri=uri, quiet=True, log_artifacts=False))
            m = {**res.metrics, "wall_s": time.perf_counter() - t0}
            published = None if loss else PROBTS_CRPS.get((model, dataset, int(horizon)))
            found.append({"cell": cell, "metrics": m, "probts_crps": published})
            rows.append([model + (f" ({loss[0]})" if loss else ""), dataset, int(horizon), m["test_mse"], m["test_coverage_80"], m["test_width_80"],
                         m["test_coverage_90"], m["test_width_90"], m["test_crps"], m["test_crps_orig"],
                         "" if published is None else published, m.get("test_mase", float("nan")),
                         f"{m['wall_s']:.0f}"])
            print(cell, {k: round(v, 4) for k, v in m.items() if k.startswith("test_c")}, flush=True)
    header = ["model", "dataset", "H", "test MSE", "cover 80", "width 80", "cover 90", "width 90", "CRPS",
              "CRPS (orig)", "ProbTS CRPS", "MASE", "wall s"]
    # the cost of quantile training: wall time of a quantile cell over its point twin (same run, one after the other)
    walls = {f["cell"]: f["metrics"]["wall_s"] for f in found}
    twins = [c for c in walls if c.endswith(":quantile") and c.rsplit(":", 1)[0] in walls]
    ratios = {c: walls[c] / walls[c.rsplit(":", 1)[0]] for c in twins}
    mse = {f["cell"]: f["metrics"]["test_mse"] for f in found}
    mse_change = {c: mse[c] / mse[c.rsplit(":", 1)[0]] - 1 for c in twins}
    path = write_results("intervals" + (f"_{suffix}" if suffix else ""), "Conformal intervals and CRPS at the configs' defaults (every test window)",
                         md_table(header, rows), found,
                         "Coverage is the share of test targets inside the interval (nominal 0.80 and 0.90), averaged "
                         "over steps and variates; widths are on the standardized scale. The intervals are split "
                         "conformal on the validation residuals, so their coverage on test measures how far the "
                         "chronological val-to-test shift breaks exchangeability. Quantile cells: MSE is the "
                         "median's; wall-time ratio to the point twin (epochs may differ with early stopping): "
                         + (", ".join(f"{c} {r:.2f}" for c, r in ratios.items()) or "none run") + ". The median's "
                         "test MSE against the point twin's (issue 23: within 2%): "
                         + (", ".join(f"{c} {100 * d:+.1f}%" for c, d in mse_change.items()) or "none run") + ".")
    print(path.read_text())


if __name__ == "__main__":
    names = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--name=")]
    main([a for a in sys.argv[1:] if not a.startswith("--name=")] or CELLS, names[0] if names else "")
