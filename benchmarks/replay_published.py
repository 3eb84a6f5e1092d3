"""Does `forecast train` replay the published DLinear runs epoch by epoch, not only match their final MSE?

Issue 2's DLinear thresholds come from the FITS authors' re-run of LTSF-Linear without the test drop_last bug:
one GPU run per cell at seed 2021, logged in VEWOXIC/FITS `logs/fixDLinear/LongForecasting/DLinear_*_336_*.log`.
With configs/dlinear.yaml (the official settings, the cure-lab train loader's drop_last and
`train.shuffle: reference`), forecast builds the same initial weights and draws the same train batches, so its
per-epoch train loss should equal the log's to float32 rounding, and early stopping should pick the same epoch.

The log's val loss is the mean over a shuffled val loader that drops its last partial batch (a different subset
each epoch); forecast's val loss uses every val window, in order (the protocol here), so the two differ slightly.

Usage: python benchmarks/replay_published.py [--train] [CELL ...]   CELL: ETTh1:96 ... Weather:96 (default: all)
       Without --train, each cell is read from benchmarks/store/mlflow.db: the newest FINISHED run with the
       cell's config hash (e.g. from `python benchmarks/accuracy.py linear`). With --train, it is trained first.
Writes benchmarks/results/replay_published.{md,json}. Nothing here chooses anything: it only compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import md_table, write_results  # noqa: E402

# Transcribed from the FITS logs named above (Epoch lines: Train Loss and Vali Loss; the final mse line).
PUBLISHED: dict[tuple[str, int], dict] = {
    ("ETTh1", 96): {"train": [0.4029245, 0.3777461, 0.3555608, 0.3421529, 0.3369668, 0.3338273, 0.3320066],
                    "val": [0.7159958, 0.7026908, 0.7140683, 0.6486187, 0.6703700, 0.6666238, 0.6627674],
                    "mse": 0.3841443955898285},
    ("ETTh1", 192): {"train": [0.4550423, 0.4368211, 0.4110306, 0.3971279, 0.3900709, 0.3865888],
                     "val": [0.9690023, 0.9542814, 0.8765706, 0.9650614, 0.8844976, 0.8965758],
                     "mse": 0.4434865117073059},
    ("ETTh1", 336): {"train": [0.5078838, 0.4874056, 0.4611091, 0.4484481, 0.4405276, 0.4367764, 0.4349577,
                               0.4337557, 0.4331892],
                     "val": [1.1275411, 1.0683818, 1.2806046, 1.0534259, 1.0723035, 1.0381850, 1.0773293, 1.0759537,
                             1.0747591],
                     "mse": 0.4469250440597534},
    ("ETTh1", 720): {"train": [0.5910377, 0.5705364, 0.5410811, 0.5253573, 0.5185215, 0.5148076],
                     "val": [1.2456726, 1.2542794, 1.2246164, 1.2611450, 1.2298431, 1.2609578],
                     "mse": 0.5042446851730347},
    ("Weather", 96): {"train": [0.5057106, 0.4644333, 0.4576586, 0.4554394, 0.4544012, 0.4539299, 0.4536867,
                                0.4536097],
                      "val": [0.4352856, 0.4271232, 0.4269595, 0.4264777, 0.4255705, 0.4259471, 0.4263279,
                              0.4260489],
                      "mse": 0.174172505736351},
}


def histories(run_id: str, store: str) -> dict[str, list[float]]:
    from forecast import tracking

    mlf = tracking.client(store)
    return {key: [m.value for m in sorted(mlf.get_metric_history(run_id, key), key=lambda m: m.step)]
            for key in ("train_loss", "val_loss")}


def main(argv: list[str]) -> None:
    from benchmarks.accuracy import STORE, run_cell, stored_cell

    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    train = "--train" in argv
    names = [a for a in argv if a != "--train"] or [f"{d}:{h}" for d, h in PUBLISHED]
    cells = []
    for name in names:
        dataset, _, horizon = name.partition(":")
        if (dataset, int(horizon) if horizon.isdigit() else -1) not in PUBLISHED:
            sys.exit(f"error: no published log for '{name}'; use some of "
                     f"{', '.join(f'{d}:{h}' for d, h in PUBLISHED)}.")
        cells.append((dataset, int(horizon)))
    STORE.parent.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{STORE}"
    rows, epochs_md = [], []
    for dataset, horizon in cells:
        if train:
            run_cell("dlinear", dataset, horizon, store)
        row = stored_cell("dlinear", dataset, horizon, store)
        pub = PUBLISHED[(dataset, horizon)]
        ours = histories(row["run_id"], store)
        n = max(len(pub["train"]), len(ours["train_loss"]))
        gaps = [abs(a - b) for a, b in zip(ours["train_loss"], pub["train"])]
        pub_best = pub["val"].index(min(pub["val"])) + 1
        rows.append({"dataset": dataset, "H": horizon, "run_id": row["run_id"], "test_mse": row["test_mse"],
                     "published_mse": pub["mse"], "epochs": len(ours["train_loss"]), "best_epoch": row["best_epoch"],
                     "published_epochs": len(pub["train"]), "published_best_epoch": pub_best,
                     "max_train_loss_gap": max(gaps), "train_loss": ours["train_loss"], "val_loss": ours["val_loss"]})
        for e in range(n):
            cols = [(ours["train_loss"], pub["train"]), (ours["val_loss"], pub["val"])]
            epochs_md.append([dataset, horizon, e + 1] + [v[e] if e < len(v) else "" for pair in cols for v in pair])
        print({k: v for k, v in rows[-1].items() if k not in ("train_loss", "val_loss")}, flush=True)
    summary = md_table(
        ["dataset", "H", "test MSE", "published MSE", "|Δ|", "epochs (best)", "published epochs (best)",
         "max |Δ train loss| per epoch"],
        [[r["dataset"], r["H"], f"{r['test_mse']:.7f}", f"{r['published_mse']:.7f}",
          f"{abs(r['test_mse'] - r['published_mse']):.1e}", f"{r['epochs']} ({r['best_epoch']})",
          f"{r['published_epochs']} ({r['published_best_epoch']})", f"{r['max_train_loss_gap']:.1e}"] for r in rows])
    per_epoch = md_table(["dataset", "H", "epoch", "train loss", "published train loss", "val loss (every window)",
                          "published val loss (shuffled, drop_last)"],
                         [[d, h, e] + [f"{v:.7f}" if isinstance(v, float) else v for v in vals]
                          for d, h, e, *vals in epochs_md])
    path = write_results(
        "replay_published", "DLinear at seed 2021 against the published FITS re-run logs, epoch by epoch",
        summary + "\n\nPer epoch:\n\n" + per_epoch, rows,
        "Published: VEWOXIC/FITS logs/fixDLinear/LongForecasting/DLinear_{Etth1,Weather}_336_{H}.log (one GPU run "
        "each, seed 2021, LTSF-Linear's Linear/ script settings, test without drop_last). forecast: configs/ "
        "defaults on the CPU, runs from benchmarks/store/mlflow.db (run ids in the .json).")
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
