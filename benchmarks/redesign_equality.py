"""Behaviour-preserving refactors: train fixed cells through the CLI and record every reported number exactly.

Run it at two commits and compare the JSON files: a refactor that preserves behaviour gives bit-equal metrics
(the same float64 values, not "close"). It goes through ``forecast train`` only, so it runs unchanged before and
after any change of the package's layout.

    python benchmarks/redesign_equality.py --tag before      # at the old commit
    python benchmarks/redesign_equality.py --tag after       # at the new one; writes the comparison table

Cells: DLinear ETTh1 L=336 H=96 at the configs' defaults (seed 2021, the replay of the published run) and
iTransformer ETTh1 H=96, one epoch of 60 batches (the attention path, dropout and time marks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, md_table, write_results  # noqa: E402

CELLS = {
    "dlinear_ETTh1_L336_H96": ["-d", "ETTh1", "-m", "dlinear"],
    "itransformer_ETTh1_H96_1ep": ["-d", "ETTh1", "-m", "itransformer", "--epochs", "1",
                                   "--set", "train.limit_train_batches=60"],
}
KEYS = ("test_mse", "test_mae", "test_mse_orig", "test_mae_orig", "best_val_loss", "test_windows")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return out.stdout.strip()


def run_cell(args: list[str], store: Path) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store}"
    subprocess.run([sys.executable, "-m", "cli", "train", *args, "--tracking-uri", uri, "-q"], check=True,
                   cwd=store.parent, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    client = MlflowClient(uri)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1,
                             order_by=["attributes.start_time DESC"])[0]
    return {k: run.data.metrics[k] for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True, help="before or after (the file results/redesign_<tag>.json)")
    args = ap.parse_args()
    out: dict[str, dict[str, float]] = {}
    for name, cell in CELLS.items():
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = run_cell(cell, Path(tmp) / "m.db")
        print(name, json.dumps(out[name]), flush=True)
    record = {"commit": git_commit(), "metrics": out}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"redesign_{args.tag}.json").write_text(json.dumps(record, indent=1))
    before = RESULTS / "redesign_before.json"
    if args.tag != "before" and before.exists():
        old = json.loads(before.read_text())
        rows = [[cell, key, repr(old["metrics"][cell][key]), repr(v), "yes" if old["metrics"][cell][key] == v else "NO"]
                for cell, values in out.items() for key, v in values.items()]
        write_results("redesign_equality", f"Redesign equality: {old['commit']} against {record['commit']}",
                      md_table(["cell", "metric", old["commit"], record["commit"], "bit-equal"], rows),
                      {"before": old, "after": record})


if __name__ == "__main__":
    main()
