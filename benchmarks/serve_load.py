"""`forecast serve` and `mlflow models serve` under load, bad requests mixed in: throughput, latency, and that
nothing breaks, measured one server after the other in one run.

A throwaway DLinear (ETTh1, L=96, H=24, one epoch of a few batches) is trained into a temporary store and served
with ``--workers 2`` on 127.0.0.1 only, by each server in turn. ``--requests`` requests (default 1,000) are sent,
``--in-flight`` at a time (default 16): single-window requests (the last L rows) and, every ``--bad-every``-th, a
bad one in turn: malformed JSON, a wrong column, a NaN, too few rows, an extra column, a horizon given as text.
Checked: every bad request gets HTTP 400 with a one-line ``message`` that does not echo the request; every good
one 200 with H rows; then one oversized request (``--big-rows``, 690,000 rows, about 50 MB) and 20 valid ones
after it; no worker dies (the server log); the server's memory (RSS of its process tree, from /proc) before and
after. Bounded in count and in time (``--limit-s``, default 300 per server). Results:
``benchmarks/results/serve_load.{md,json}``.

    python benchmarks/serve_load.py [--requests 1000] [--in-flight 16] [--bad-every 10 (0: none)]
        [--servers forecast,mlflow] [--name serve_load]
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


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def _rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants, from /proc (MB)."""
    total = 0
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) spent so far by ``pid`` and its descendants, from /proc."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


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
    split = lambda c, r, **k: json.dumps({"dataframe_split": {"columns": c, "data": r}, **k}).encode()  # noqa: E731
    nan_rows = [list(r) for r in rows]
    nan_rows[-1][-1] = None
    return {
        "good": split(cols, rows),
        "malformed JSON": b'{"dataframe_split": {"columns": ["date"',
        "wrong column": split([*cols[:-1], "XX"], rows),
        "NaN": split(cols, nan_rows),
        "5 rows": split(cols, rows[-5:]),
        "extra column": split([*cols, "extra"], [[*r, 1.0] for r in rows]),
        "horizon as text": split(cols, rows, params={"horizon": "ten"}),
    }


def _start(kind: str, run_id: str, port: int, workers: int, tmp: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    """``forecast serve`` or ``mlflow models serve`` on 127.0.0.1, waited on until /ping answers."""
    model = f"runs:/{run_id}/model"
    argv = ([sys.executable, "-m", "cli", "serve", "-m", model, "-p", str(port), "-w", str(workers), "-q"]
            if kind == "forecast" else
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local", "-h",
             "127.0.0.1", "-p", str(port), "-w", str(workers)])
    log_path = tmp / f"serve-{kind}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 150
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return server, log_path
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)


def _one_line(doc: dict) -> bool:
    message = str(doc.get("message", ""))
    return bool(message) and "\n" not in message and "Failed to predict" not in message and len(message) < 400


def _measure(kind: str, run_id: str, bodies: dict[str, bytes], big: bytes, args: argparse.Namespace, tmp: Path,
             env: dict) -> dict:
    """One server: the load (good and bad requests), then one oversized body, then 20 good ones after it."""
    port = _free_port()
    server, log_path = _start(kind, run_id, port, args.workers, tmp, env)
    url = f"http://127.0.0.1:{port}/invocations"
    bad_kinds = [k for k in bodies if k != "good"]
    try:
        for _ in range(20):  # warm every worker
            _post(url, bodies["good"])
        rss_before = _rss_mb(server.pid)
        plan = [bad_kinds[(i // args.bad_every) % len(bad_kinds)] if args.bad_every > 0 and
                i % args.bad_every == args.bad_every - 1
                else "good" for i in range(args.requests)]
        stop = time.monotonic() + args.limit_s

        def one(kind_: str) -> tuple[str, int, dict, float]:
            if time.monotonic() > stop:
                return kind_, -1, {}, 0.0
            return (kind_, *_post(url, bodies[kind_]))

        t0, client0, server0 = time.perf_counter(), time.process_time(), _cpu_s(server.pid)
        with ThreadPoolExecutor(args.in_flight) as pool:
            results = list(pool.map(one, plan))
        wall = time.perf_counter() - t0
        client_cpu, server_cpu = time.process_time() - client0, _cpu_s(server.pid) - server0
        rss_after = _rss_mb(server.pid)
        try:
            big_status, big_doc, big_s = _post(url, big)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            big_status, big_doc, big_s = -1, {"raw": f"no HTTP response ({type(err).__name__})"}, float("nan")
        after = [_post(url, bodies["good"]) for _ in range(20)]
        alive = server.poll() is None
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    good = [r for r in results if r[0] == "good"]
    bad = [r for r in results if r[0] != "good"]
    lat = sorted(r[3] * 1000 for r in good if r[1] == 200)
    return {
        "server": kind, "requests": len(results), "wall_s": wall, "req_per_s": len(results) / wall,
        "server_cpu_ms_per_request": 1000 * server_cpu / len(results),
        "client_cpu_ms_per_request": 1000 * client_cpu / len(results),
        "client_cpu_share": client_cpu / max(client_cpu + server_cpu, 1e-9),
        "p50_ms": statistics.median(lat) if lat else None, "p99_ms": lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "good": len(good), "good_ok": sum(r[1] == 200 and len(r[2].get("predictions", [])) == H for r in good),
        "bad": len(bad), "bad_400_one_line": sum(r[1] == 400 and _one_line(r[2]) for r in bad),
        "big_mb": len(big) / 2**20, "big_status": big_status, "big_seconds": big_s,
        "big_message": str(big_doc.get("message", big_doc.get("raw", "")))[:300],
        "after_big_ok": sum(a[0] == 200 for a in after), "after_big_max_ms": max(a[2] for a in after) * 1000,
        "worker_deaths_in_log": text.count("died") + text.count("Child process"), "server_alive": alive,
        "rss_mb_before": rss_before, "rss_mb_after": rss_after,
        "bad_messages": {k: next((str(r[2].get("message", r[2]))[:300] for r in bad if r[0] == k), None)
                         for k in bad_kinds},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bad-every", type=int, default=10)
    ap.add_argument("--big-rows", type=int, default=690_000, help="rows of the one oversized request (~50 MB)")
    ap.add_argument("--servers", default="forecast,mlflow", help="forecast (forecast serve), mlflow (mlflow "
                    "models serve), in this order, one after the other")
    ap.add_argument("--limit-s", type=float, default=300, help="per server, for the load part")
    ap.add_argument("--name", default="serve_load", help="results file name (benchmarks/results/NAME.md)")
    args = ap.parse_args()
    data_dir = Path(os.environ.get("FORECAST_DATA_DIR", ROOT.parent / "shared" / "data"))
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
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
        full = pl.read_csv(gzip.decompress((data_dir / "ETTh1.csv.gz").read_bytes()))
        bodies = _bodies(full.tail(L))
        reps = -(-args.big_rows // full.height)
        big_rows = pl.concat([full] * reps).head(args.big_rows)
        big = json.dumps({"dataframe_split": {"columns": big_rows.columns, "data": big_rows.rows()}}).encode()
        found = [_measure(kind, run.info.run_id, bodies, big, args, tmp, env) for kind in servers]
    header = ["figure", *[f"`{'forecast serve' if f['server'] == 'forecast' else 'mlflow models serve'}`"
                          for f in found]]
    spec = [("requests", "requests", "{:d}"), ("req/s", "req_per_s", "{:.1f}"), ("p50 ms (valid)", "p50_ms", "{:.1f}"),
            ("p99 ms (valid)", "p99_ms", "{:.1f}"), ("server CPU ms per request", "server_cpu_ms_per_request", "{:.2f}"),
            ("client CPU ms per request (same 2 cores)", "client_cpu_ms_per_request", "{:.2f}"),
            ("client's share of the CPU spent", "client_cpu_share", "{:.2f}")]
    rows = [[name, *[fmt.format(f[key]) for f in found]] for name, key, fmt in spec]
    rows += [["valid: 200 with H rows", *[f"{f['good_ok']}/{f['good']}" for f in found]],
             ["bad: 400 with one line", *[f"{f['bad_400_one_line']}/{f['bad']}" for f in found]],
             [f"one {found[0]['big_mb']:.0f} MB request", *[f"HTTP {f['big_status']} in {f['big_seconds']:.2f} s"
                                                            for f in found]],
             ["20 valid requests after it", *[f"{f['after_big_ok']}/20, slowest {f['after_big_max_ms']:.0f} ms"
                                              for f in found]],
             ["worker deaths in the log", *[str(f["worker_deaths_in_log"]) for f in found]],
             ["server alive after", *[str(f["server_alive"]) for f in found]],
             ["server RSS before / after the load (MB)", *[f"{f['rss_mb_before']:.0f} / {f['rss_mb_after']:.0f}"
                                                          for f in found]]]
    if len(found) == 2 and found[0]["req_per_s"] and found[1]["req_per_s"]:
        rows.append(["req/s ratio (first / second)", f"{found[0]['req_per_s'] / found[1]['req_per_s']:.2f}", ""])
    notes = "\n\n".join(
        f"Messages of `{f['server']}` (bad kinds, then the oversized request):\n"
        + "\n".join(f"- {k}: `{v}`" for k, v in {**f["bad_messages"], "oversized": f["big_message"]}.items()
                    if v is not None)
        for f in found)
    mixed = f"one bad request in {args.bad_every}" if args.bad_every > 0 else "valid requests only"
    path = write_results(args.name, f"Serving under load ({args.workers} workers, {args.in_flight} in flight, "
                         f"{mixed}), the servers one after the other",
                         md_table(header, rows), found, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
