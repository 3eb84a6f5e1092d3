"""Accuracy against the papers: train with the paper defaults from configs/ and compare test MSE to a target.

Usage: python benchmarks/accuracy.py linear            (DLinear/NLinear on ETTh1 and Weather, issue 2)
       python benchmarks/accuracy.py ablation          (OrthoTrans and NormLin ablation on ETTh1, issue 4)
       python benchmarks/accuracy.py CELL [CELL ...]   (cells like dlinear:ETTh1:96 or olinear:ETTh1:96:model.mixer=attention)
       python benchmarks/accuracy.py --from-store [--name=X] CELL ...
           (no training: the newest FINISHED run in the store whose resolved config has the cell's config hash,
            e.g. a `forecast benchmark --tracking-uri sqlite:///benchmarks/store/mlflow.db` cell)
       --store=PATH (before the cells, repeatable) records runs in PATH (a sqlite file or an MLflow URI) instead of
           benchmarks/store/mlflow.db; with --from-store the newest matching run of all the stores is read.
           Processes that train at the same time (several cells on one GPU) each want their own store.

Every test window is evaluated (no drop_last). Nothing is tuned on the test split: the configs are the
official scripts' settings. Runs are recorded in benchmarks/store/mlflow.db (git-ignored).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import md_table, write_results  # noqa: E402
from forecast.config import parse_sets  # noqa: E402
from forecast.tracking import resolve_uri as tracking_uri  # noqa: E402

# (model, dataset, horizon) -> the acceptance threshold on test MSE that the issues ask for. The published MSE
# and its source come from configs/published.yaml (forecast.published), at the cell's lookback L.
TARGETS: dict[tuple[str, str, int], float] = {
    ("dlinear", "ETTh1", 96): 0.386,
    ("dlinear", "ETTh1", 192): 0.445,
    ("dlinear", "ETTh1", 336): 0.450,
    ("dlinear", "ETTh1", 720): 0.510,
    ("nlinear", "ETTh1", 96): 0.378,
    ("dlinear", "Weather", 96): 0.177,
    ("itransformer", "ETTh1", 96): 0.390,
    ("itransformer", "Weather", 96): 0.177,
    ("iflowformer", "Weather", 96): 0.186,
    ("flowformer", "Weather", 96): 0.186,
    ("smamba", "ETTh1", 96): 0.390,
    ("smamba", "Weather", 96): 0.168,
    ("olinear", "ETTh1", 96): 0.365,
    ("olinear", "Weather", 96): 0.156,
}


def published(model: str, dataset: str, horizon: int, lookback: int) -> tuple[float, str]:
    """(published MSE, source) from configs/published.yaml, or (nan, "") when the file has no such row."""
    from forecast.published import load_published, lookup

    row = lookup(load_published(), model, dataset, horizon, lookback)
    return (row.mse, row.source) if row else (float("nan"), "")


STORE = Path(__file__).resolve().parent / "store" / "mlflow.db"
GROUPS = {"ablation": ["dlinear:ETTh1:96", "dlinear:ETTh1:96:model.orthotrans=true",
                      "nlinear:ETTh1:96", "nlinear:ETTh1:96:model.orthotrans=true",
                      "dlinear:ETTh1:96:data.seq_len=96", "dlinear:ETTh1:96:data.seq_len=96,model.orthotrans=true",
                      "olinear:ETTh1:96", "olinear:ETTh1:96:model.mixer=attention",
                      "olinear:ETTh1:96:model.orthotrans=false"],
          "linear": ["dlinear:ETTh1:96", "dlinear:ETTh1:192", "dlinear:ETTh1:336", "dlinear:ETTh1:720",
                     "nlinear:ETTh1:96", "dlinear:Weather:96"]}


def _row(model: str, dataset: str, horizon: int, lookback: int, extra: dict | None, m: dict, epochs: int,
         best_epoch: int, seconds: float, train_seconds: float) -> dict:
    # A variant (extra overrides) is not the paper configuration: it has no target.
    target = TARGETS.get((model, dataset, horizon), float("nan")) if not extra else float("nan")
    paper, source = published(model, dataset, horizon, lookback)
    return {"model": model, "dataset": dataset, "L": lookback, "H": horizon, "test_mse": m["test_mse"],
            "test_mae": m["test_mae"], "target": target, "paper": paper, "source": source,
            "pass": (m["test_mse"] <= target) if target == target else "n/a",
            "epochs": epochs, "best_epoch": best_epoch, "windows": int(m["test_windows"]),
            "seconds": round(seconds, 1), "epoch_seconds": round(train_seconds / max(epochs, 1), 2)}


def run_cell(model: str, dataset: str, horizon: int, store: str, extra: dict | None = None) -> dict:
    from forecast.benchmark.grid import config_hash
    from forecast.resolve import resolve
    from forecast.pipeline import TrainOptions, train

    cfg = resolve(model, dataset, {"data.horizon": horizon, **(extra or {})})
    t0 = time.perf_counter()
    res = train(cfg, TrainOptions(tracking_uri=store, quiet=True,
                                  tags={"benchmark": "accuracy", "config_hash": config_hash(cfg)}))
    return _row(model, dataset, horizon, cfg.data.seq_len, extra, res.metrics, res.epochs_run, res.best_epoch + 1,
                time.perf_counter() - t0, res.train_seconds)


def stored_cell(model: str, dataset: str, horizon: int, stores: list[str], extra: dict | None = None) -> dict:
    """The row of the newest FINISHED run in ``stores`` with this cell's config hash; nothing is trained."""
    from forecast import tracking
    from forecast.benchmark.grid import config_hash
    from forecast.resolve import resolve

    cfg = resolve(model, dataset, {"data.horizon": horizon, **(extra or {})})
    h = config_hash(cfg)
    found = []
    for store in stores:
        mlf = tracking.client(store)
        exp_ids = [e.experiment_id for e in mlf.search_experiments()]
        runs = mlf.search_runs(exp_ids, filter_string=f"tags.config_hash = '{h}' and attributes.status = 'FINISHED'",
                               order_by=["attributes.start_time DESC"])
        found += [(r, mlf) for r in runs if "test_mse" in r.data.metrics]
    if not found:
        raise SystemExit(f"error: no finished run of {model}:{dataset}:{horizon} (config hash {h}) in "
                         f"{', '.join(stores)}; train it first (drop --from-store)")
    run, mlf = max(found, key=lambda rm: rm[0].info.start_time)
    val = mlf.get_metric_history(run.info.run_id, "val_loss")
    best = min(val, key=lambda v: (v.value, v.step)).step + 1 if val else 0
    seconds = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
    row = _row(model, dataset, horizon, cfg.data.seq_len, extra, run.data.metrics, len(val), best, seconds,
               run.data.metrics.get("train_seconds", float("nan")))
    row["run_id"] = run.info.run_id
    return row


def _write(name: str, rows: list[dict], from_store: bool = False) -> Path:
    header = ["model", "variant", "dataset", "L", "H", "test MSE", "test MAE", "target", "paper", "pass", "epochs (best)",
              "test windows", "s/epoch", "wall s"]
    table = md_table(header, [[r["model"], r.get("variant", ""), r["dataset"], r["L"], r["H"], r["test_mse"], r["test_mae"], r["target"],
                               r["paper"], r["pass"], f"{r['epochs']} ({r['best_epoch']})", r["windows"],
                               r["epoch_seconds"], r["seconds"]] for r in rows])
    return write_results(name, "Accuracy against the published numbers", table, rows,
                         "Paper defaults from configs/, every stride-1 test window, MSE/MAE on the standardized "
                         "scale. Targets are the issues' acceptance thresholds; `paper` is the published MSE."
                         + ("\nRead from the store (--from-store): each row is the newest FINISHED run with the "
                            "cell's config hash (run ids in the .json); wall s is that run's MLflow duration."
                            if from_store else ""))


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    bad = [a for a in argv if not a.startswith("--") and a not in GROUPS and a.count(":") < 2]
    if bad:
        sys.exit(f"error: '{bad[0]}' is not a cell (model:dataset:horizon[:key=value...]) or a group "
                 f"({', '.join(GROUPS)}); see --help.")
    name, from_store = "accuracy", "--from-store" in argv
    stores = [tracking_uri(a.split("=", 1)[1]) for a in argv if a.startswith("--store=")]
    argv = [a for a in argv if a != "--from-store" and not a.startswith("--store=")]
    if argv and argv[0].startswith("--name="):
        name, argv = "accuracy_" + argv[0].split("=", 1)[1], argv[1:]
    if len(stores) > 1 and not from_store:
        sys.exit("error: training records its runs in one store; give one --store=PATH (several only with --from-store).")
    cells = [c for a in argv for c in GROUPS.get(a, [a])]
    if len(argv) == 1 and argv[0] in GROUPS:
        name = f"accuracy_{argv[0]}"
    rows: list[dict] = []
    # Runs are kept in benchmarks/store/ (git-ignored) so dashboards can be built from them.
    if not stores:
        STORE.parent.mkdir(parents=True, exist_ok=True)
        stores = [f"sqlite:///{STORE}"]
    for cell in cells:
        model, dataset, horizon, *sets = cell.split(":")
        extra = parse_sets(",".join(sets).split(",")) if sets else {}
        if from_store:
            rows.append(stored_cell(model, dataset, int(horizon), stores, extra))
        else:
            rows.append(run_cell(model, dataset, int(horizon), stores[0], extra))
        rows[-1]["variant"] = ",".join(sets)
        print(rows[-1], flush=True)
        path = _write(name, rows, from_store)  # after every cell, so a long queue keeps what it finished
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:] or ["linear"])
