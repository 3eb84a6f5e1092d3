"""`mlflow models serve` under load, with bad requests mixed in: throughput, latency, and that nothing breaks.

A throwaway DLinear (ETTh1, L=96, H=24, one epoch of a few batches) is trained into a temporary store and served
with ``--workers 2`` on 127.0.0.1 only. ``--requests`` requests (default 1,000) are sent, ``--in-flight`` at a
time (default 16): single-window requests (the last L rows) and, every ``--bad-every``-th, a bad one in turn:
malformed JSON, a wrong column, a NaN, too few rows, an extra column. Checked: every bad request gets HTTP 400
with a one-line ``message`` that does not echo the request; every good one 200 with H rows; no worker dies (the
server log); the server's memory (RSS of its process tree, from /proc) before and after. Bounded in count and in
time (``--limit-s``, default 300). Results: ``benchmarks/results/serve_load.{md,json}``.

    python benchmarks/serve_load.py [--requests 1000] [--in-flight 16]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import md_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
L, H = 96, 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants, from /proc (MB)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir()
                     for c in (t / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def _post(url: str, body: bytes) -> tuple[int, dict, float]:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        doc = json.loads(raw or b"{}")
    except json.JSONDecodeError:
        doc = {"raw": raw[:200].decode(errors="replace")}
    return status, doc, time.perf_counter() - t0


def _bodies(history: pl.DataFrame) -> dict[str, bytes]:
    cols, rows = history.columns, history.rows()
    split = lambda c, r: json.dumps({"dataframe_split": {"columns": c, "data": r}}).encode()  # noqa: E731
    nan_rows = [list(r) for r in rows]
    nan_rows[-1][-1] = None
    return {
        "good": split(cols, rows),
        "malformed JSON": b'{"dataframe_split": {"columns": ["date"',
        "wrong column": split([*cols[:-1], "XX"], rows),
        "NaN": split(cols, nan_rows),
        "5 rows": split(cols, rows[-5:]),
        "extra column": split([*cols, "extra"], [[*r, 1.0] for r in rows]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--bad-every", type=int, default=10)
    ap.add_argument("--limit-s", type=float, default=300)
    args = ap.parse_args()
    data_dir = Path(os.environ.get("FORECAST_DATA_DIR", ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "cli", "train", "-d", "ETTh1", "-m", "dlinear", "-L", str(L), "-H",
                        str(H), "--epochs", "1", "--set", "train.limit_train_batches=3", "--tracking-uri", uri, "-q"],
                       check=True, cwd=tmp, env=env)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run = client.search_runs([client.get_experiment_by_name("ETTh1").experiment_id])[0]
        history = pl.read_csv(gzip.decompress((data_dir / "ETTh1.csv.gz").read_bytes())).tail(L)
        bodies = _bodies(history)
        bad_kinds = [k for k in bodies if k != "good"]
        port = _free_port()
        log = open(tmp / "serve.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                   f"runs:/{run.info.run_id}/model", "--env-manager", "local", "-h", "127.0.0.1",
                                   "-p", str(port), "-w", "2"], cwd=tmp, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 150
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2):
                        break
                except (urllib.error.URLError, ConnectionError):
                    assert server.poll() is None and time.monotonic() < deadline, (tmp / "serve.log").read_text()
                    time.sleep(0.3)
            for _ in range(20):  # warm both workers
                _post(f"{base}/invocations", bodies["good"])
            rss_before = _rss_mb(server.pid)
            plan = [bad_kinds[(i // args.bad_every) % len(bad_kinds)] if i % args.bad_every == args.bad_every - 1
                    else "good" for i in range(args.requests)]
            stop = time.monotonic() + args.limit_s
            t0 = time.perf_counter()

            def one(kind: str) -> tuple[str, int, dict, float]:
                if time.monotonic() > stop:
                    return kind, -1, {}, 0.0
                status, doc, secs = _post(f"{base}/invocations", bodies[kind])
                return kind, status, doc, secs

            with ThreadPoolExecutor(args.in_flight) as pool:
                results = list(pool.map(one, plan))
            wall = time.perf_counter() - t0
            rss_after = _rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
            log.close()
        text = (tmp / "serve.log").read_text(errors="replace")
    good = [r for r in results if r[0] == "good"]
    bad = [r for r in results if r[0] != "good"]
    lat = sorted(r[3] * 1000 for r in good if r[1] == 200)
    good_ok = sum(r[1] == 200 and len(r[2].get("predictions", [])) == H for r in good)
    bad_ok = sum(r[1] == 400 and "\n" not in r[2].get("message", "") and "Failed to predict" not in
                 r[2].get("message", "") and len(r[2].get("message", "")) < 400 for r in bad)
    died = text.count("died") + text.count("Child process")
    figures = {"requests": len(results), "in_flight": args.in_flight, "wall_s": wall,
               "req_per_s": len(results) / wall, "p50_ms": statistics.median(lat) if lat else None,
               "p99_ms": lat[int(0.99 * (len(lat) - 1))] if lat else None, "good": len(good), "good_ok": good_ok,
               "bad": len(bad), "bad_400_one_line": bad_ok, "worker_deaths_in_log": died, "server_alive": alive,
               "rss_mb_before": rss_before, "rss_mb_after": rss_after,
               "bad_messages": {k: next((r[2].get("message") for r in bad if r[0] == k), None) for k in bad_kinds}}
    rows = [["requests (16 in flight)", figures["requests"]], ["req/s", round(figures["req_per_s"], 1)],
            ["p50 ms (valid)", round(figures["p50_ms"] or 0, 1)], ["p99 ms (valid)", round(figures["p99_ms"] or 0, 1)],
            ["valid: 200 with H rows", f"{good_ok}/{len(good)}"], ["bad: 400, one line", f"{bad_ok}/{len(bad)}"],
            ["worker deaths in the log", died], ["server alive after", alive],
            ["server RSS before / after (MB)", f"{rss_before:.0f} / {rss_after:.0f}"]]
    notes = "\n".join(f"- {k}: `{v}`" for k, v in figures["bad_messages"].items())
    path = write_results("serve_load", "mlflow models serve under load, bad requests mixed in",
                         md_table(["figure", "value"], rows), figures, "Messages of the bad requests:\n" + notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
