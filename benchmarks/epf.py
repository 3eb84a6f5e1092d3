"""Many-to-one forecasting beside TimeXer's published table (issue 24): the five EPF electricity-price datasets.

TimeXer (Wang et al., NeurIPS 2024) reports forecasting with exogenous variables on EPF (NP, PJM, BE, FR, DE:
hourly, the price ``OT`` as the target, two load or generation forecasts as exogenous series) at L=168, H=24, in its
Table 2 (``figures/Result_EPF.png`` of thuml/TimeXer, transcribed below), beside iTransformer and DLinear run by its
authors. Its protocol is TSLib's ``features MS`` on a custom CSV: chronological 70/10/20 splits with val and test
starting L rows early, a scaler fit on the train rows of every column, MSE/MAE of the target on that scale, every test
window (its test loader keeps the last partial batch). forecast runs the same split and metrics with ``--target OT``
(the other two columns as past covariates, observed up to the origin only, as TSLib's MS reads them), each model at
its configs' defaults otherwise. Nothing is tuned; early stopping reads val.

The CSVs come from a checkout of thuml/TimeXer (``dataset/EPF``, not copied into this project). Their header names
begin with a space, which forecast refuses as a user's mistake; a copy with the names stripped is what trains.
Results: ``benchmarks/results/epf_<model>.{md,json}`` per model, rewritten after every cell; a run of some datasets
keeps the other datasets' rows already there (so a long run can be finished in parts).

    python benchmarks/epf.py --timexer /path/to/TimeXer [--models dlinear,itransformer] [--datasets NP,PJM,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, md_table, write_results  # noqa: E402

SOURCE = "thuml/TimeXer figures/Result_EPF.png (Table 2 of the paper), commit 7601190"
# Table 2, (MSE, MAE) per dataset: TimeXer, and the iTransformer and DLinear its authors ran.
PUBLISHED = {
    "NP": {"timexer": (0.236, 0.268), "itransformer": (0.265, 0.300), "dlinear": (0.309, 0.321)},
    "PJM": {"timexer": (0.093, 0.192), "itransformer": (0.097, 0.197), "dlinear": (0.108, 0.215)},
    "BE": {"timexer": (0.379, 0.243), "itransformer": (0.394, 0.270), "dlinear": (0.463, 0.313)},
    "FR": {"timexer": (0.385, 0.208), "itransformer": (0.439, 0.233), "dlinear": (0.429, 0.260)},
    "DE": {"timexer": (0.440, 0.415), "itransformer": (0.479, 0.443), "dlinear": (0.520, 0.463)},
}


def stripped_copy(src: Path, out: Path) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    out.write_text(",".join(name.strip() for name in lines[0].rstrip("\n").split(",")) + "\n" + "".join(lines[1:]))
    return out


def main() -> None:
    from forecast.pipeline import TrainOptions, train
    from forecast.resolve import resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timexer", type=Path, required=True, help="a checkout of thuml/TimeXer")
    ap.add_argument("--models", default="dlinear,itransformer")
    ap.add_argument("--datasets", default=",".join(PUBLISHED))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="epf-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        for model in a.models.split(","):
            found = []
            for name in a.datasets.split(","):
                path = stripped_copy(a.timexer / "dataset" / "EPF" / f"{name}.csv", Path(tmp) / f"{name}.csv")
                cfg = resolve(model, str(path), {"data.seq_len": 168, "data.horizon": 24, "data.target": "OT"})
                t0 = time.perf_counter()
                m = train(cfg, TrainOptions(tracking_uri=uri, quiet=True, log_artifacts=False)).metrics
                found.append({"dataset": name, "model": model, "metrics": m, "published": PUBLISHED[name],
                              "wall_s": time.perf_counter() - t0})
                print(name, model, round(m["test_mse"], 4), flush=True)
                write(model, found)


def write(model: str, found: list[dict]) -> None:
    path = RESULTS / f"epf_{model}.json"
    ran = {f["dataset"] for f in found}
    kept = [f for f in json.loads(path.read_text())["results"] if f["dataset"] not in ran] if path.exists() else []
    cells = sorted(kept + found, key=lambda f: list(PUBLISHED).index(f["dataset"]))
    rows = []
    for f in cells:
        m, (pub_mse, pub_mae), (best_mse, best_mae) = f["metrics"], f["published"][model], f["published"]["timexer"]
        rows.append([f["dataset"], model, m["test_mse"], m["test_mae"], pub_mse, pub_mae,
                     f"{m['test_mse'] / pub_mse - 1:+.1%}", best_mse, best_mae, int(m["test_windows"]),
                     f"{f['wall_s']:.0f}"])
    header = ["dataset", "model", "MSE", "MAE", "published MSE (same model)", "published MAE", "MSE vs published",
              "TimeXer MSE", "TimeXer MAE", "test windows", "wall s"]
    write_results(f"epf_{model}", f"Many-to-one on EPF (L=168, H=24, target OT): {model} beside TimeXer's Table 2",
                  md_table(header, rows), cells,
                  f"Published: {SOURCE}; its iTransformer and DLinear rows were run by TimeXer's authors in TSLib (MS). "
                  "Ours: `forecast train -d <EPF>.csv -L 168 -H 24 --target OT` at the configs' defaults, the two "
                  "other columns as past covariates; metrics on the standardized target over every test window. "
                  "2-core CPU, one run each (seed as configured); a row's command is the one that wrote it last.")


if __name__ == "__main__":
    main()
