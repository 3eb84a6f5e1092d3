"""Tuning workers on one PostgreSQL: the wall time of a 16-trial study with 1 worker and with 2 workers.

DLinear on ETTh1 at H=96 (the paper's L=336), TPE and the median pruner, each trial a short run (``--epochs``,
2 by default) through ``forecast tune``. Both studies live in one PostgreSQL database (the Optuna storage) and
record into one MLflow store in a second database of the same server, the recipe of README "Scaling out".
The 1-worker study runs 16 trials in one process; the 2-worker study starts two ``forecast tune`` processes on
the same study name with 8 trials each. Every worker uses one torch thread (``OMP_NUM_THREADS=1``), so two workers
on two cores do not oversubscribe them. Reported: wall time from the first start to the last exit, trials
complete / pruned, best validation loss, and the speedup.

Usage: python benchmarks/tune_workers.py [--postgres URL] [--trials 16] [--epochs 2]

``--postgres`` (default ``$FORECAST_TEST_POSTGRES``) is a URL whose role may create databases; two throw-away
databases are created and dropped. ``.ci/postgres start DIR`` starts such a server. Results go to
benchmarks/results/tune_workers.md and .json. Run it on an otherwise idle machine: the timings share the CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import md_table, write_results  # noqa: E402

MODEL, DATASET, HORIZON = "dlinear", "ETTh1", 96


def _admin(url: str):  # noqa: ANN202 (a psycopg connection)
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database, autocommit=True, connect_timeout=10)


def _database(base: str, name: str, drop: bool = False) -> str:
    from sqlalchemy.engine import make_url

    with _admin(base) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if drop else f'CREATE DATABASE "{name}"')
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def run_study(label: str, workers: int, trials: int, epochs: int, storage: str, tracking: str,
              work: Path) -> dict[str, Any]:
    """Start ``workers`` ``forecast tune`` processes on one new study and wait; the study's numbers."""
    import optuna

    study = f"{label}-{uuid.uuid4().hex[:6]}"
    per_worker = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cli", "tune", "-d", DATASET, "-m", MODEL, "--horizon", str(HORIZON),
           "--epochs", str(epochs), "--study-name", study, "--storage", storage, "--tracking-uri", tracking,
           "--experiment", "tune-workers", "-q"]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--trials", str(n), "--sampler-seed", str(100 + i)], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, n in enumerate(per_worker)]
    outs = [p.communicate(timeout=1800) for p in procs]
    wall = time.perf_counter() - t0
    bad = [(p.returncode, err[-500:]) for p, (_, err) in zip(procs, outs) if p.returncode != 0]
    if bad:
        raise SystemExit(f"{label}: a worker failed: {bad}")
    done = optuna.load_study(study_name=study, storage=storage).trials
    complete = [t for t in done if t.state.name == "COMPLETE"]
    trial_s = sum(t.duration.total_seconds() for t in done if t.duration is not None)
    return {"setting": label, "workers": workers, "trials_per_worker": per_worker, "trials": len(done),
            "distinct_numbers": len({t.number for t in done}), "complete": len(complete),
            "pruned": sum(t.state.name == "PRUNED" for t in done),
            "failed": sum(t.state.name == "FAIL" for t in done), "wall_s": round(wall, 1),
            "load_1min_at_end": round(os.getloadavg()[0], 2),
            "trial_s_sum": round(trial_s, 1),
            "best_val_loss": min(t.value for t in complete) if complete else float("nan")}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", default=os.environ.get("FORECAST_TEST_POSTGRES"))
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    if not args.postgres:
        raise SystemExit("pass --postgres URL or set FORECAST_TEST_POSTGRES (see .ci/postgres)")
    os.environ.setdefault("FORECAST_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    load = os.getloadavg()
    tag = uuid.uuid4().hex[:8]
    names = [f"bench_optuna_{tag}", f"bench_mlflow_{tag}"]
    storage, tracking = (_database(args.postgres, n) for n in names)
    rows: list[dict[str, Any]] = []
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking).search_experiments()  # create the MLflow tables before timing
        with tempfile.TemporaryDirectory() as tmp:
            for label, workers in (("1-worker", 1), ("2-workers", 2)):
                rows.append(run_study(label, workers, args.trials, args.epochs, storage, tracking, Path(tmp)))
                print(rows[-1], flush=True)
    finally:
        for name in names:
            _database(args.postgres, name, drop=True)
    one, two = rows
    speedup = one["wall_s"] / two["wall_s"]
    table = md_table(["setting", "workers x trials", "wall s", "sum of trial s", "complete", "pruned",
                      "best val loss"],
                     [[r["setting"], " + ".join(map(str, r["trials_per_worker"])), f"{r['wall_s']:.1f}",
                       f"{r['trial_s_sum']:.1f}", r["complete"], r["pruned"], r["best_val_loss"]] for r in rows])
    order_note = ("- The pruned counts differ between the settings because the trials finish in a different "
                  "order (the median\n  pruner compares against the trials complete at that moment).\n"
                  if one["pruned"] != two["pruned"] else "")
    share = two["trial_s_sum"] / one["trial_s_sum"]
    notes = f"""
- Study: {MODEL} on {DATASET}, H={HORIZON}, the configs/ search space and paper lookback (L=336), {args.epochs}
  epochs per trial, TPE (seeded per worker) and the median pruner; {args.trials} trials per setting; the Optuna
  storage and the MLflow store are two databases of one local PostgreSQL 15; one torch thread per worker.
- Wall time runs from starting the worker processes to the last one's exit (imports, data loading and the
  MLflow parent run included); "sum of trial s" adds up the trials' own durations from Optuna.
- Load average when the script started: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min).
- **2 workers against 1: {speedup:.2f}x** in wall time. Every trial number appeared exactly once
  ({one['distinct_numbers']} and {two['distinct_numbers']} distinct numbers for {one['trials']} and
  {two['trials']} trials).
- The trials' own durations added up to {share:.2f}x as much with 2 workers ({one['trial_s_sum']:.1f} s against
  {two['trial_s_sum']:.1f} s; 1.0x would mean each worker had a core to itself, 2.0x that they took turns on one).
  1-minute load average at the end of each setting: {one['load_1min_at_end']:.2f} and {two['load_1min_at_end']:.2f}.
- This machine has 2 cores, so two workers can at best halve the time, and only if nothing else runs: each
  worker also pays its own process start, and any other load takes cores from them (the PostgreSQL server ran
  on the same 2 cores; its share was not measured). The recipe is for one worker per core, GPU or machine.
{order_note}- No GPU is lent to this task: the `--devices 1` against `--precision bf16-mixed` iTransformer/Weather comparison
  on a GPU was not run.
"""
    path = write_results("tune_workers", "Tuning workers sharing one PostgreSQL study", table,
                         {"rows": rows, "speedup": speedup, "load_average": load}, notes)
    print(path.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
