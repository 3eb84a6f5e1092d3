"""Test helpers: run the CLI in-process and capture its exit code and output; run a local HTTP server process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    import cli

    old = sys.argv
    sys.argv = ["forecast", *argv]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def run_cli_io(argv: list[str]) -> tuple[int, str, str]:
    """run_cli for module-scoped fixtures (no capsys): the CLI in-process, output captured."""
    import contextlib
    import io

    import cli

    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["forecast", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(argv: list[str], probe_url: str, log_path: Path, env: dict[str, str], cwd: Path,
                   timeout: float = 120) -> Iterator[subprocess.Popen]:
    """Start ``argv`` in its own session, wait until ``probe_url`` answers 200, and stop the whole group after.

    Fails with the tail of the server's log if it exits first, or after ``timeout`` seconds.
    """
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(probe_url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"{argv[:4]} did not answer {probe_url} in {timeout:.0f} s"
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def module_forecast(module, series, seq_len: int, horizon: int):  # noqa: ANN001, ANN201 (a ForecastModule, a Series)
    """The LightningModule's own forecast of the H steps after the series' last L rows, in original units: what a
    saved model must give back from its artifact alone."""
    import torch

    from forecast.data.timefeatures import future_dates, time_features

    module.eval()
    x = torch.from_numpy(series.scaled[-seq_len:])[None]
    x_mark = y_mark = None
    if series.marks is not None:
        x_mark = torch.from_numpy(series.marks[-seq_len:])[None]
        future = future_dates(series.dates[-1], series.freq, horizon)
        y_mark = torch.from_numpy(time_features(future, series.freq))[None]
    with torch.no_grad():
        pred = module(x, x_mark, y_mark)[0].double().numpy()
    return pred * series.std + series.mean


def etth1_raw():  # noqa: ANN201 (a polars DataFrame)
    """ETTh1 as published, from $FORECAST_DATA_DIR; the calling test is skipped when it is not there."""
    import gzip
    import os

    import polars as pl

    src = Path(os.environ.get("FORECAST_DATA_DIR", "")).resolve() / "ETTh1.csv.gz"
    if not src.exists():
        pytest.skip(f"benchmark data not found in {src.parent}")
    return pl.read_csv(gzip.decompress(src.read_bytes()))


def asgi_post(app, body: bytes, ctype: str = "application/json", path: str = "/invocations",  # noqa: ANN001
              chunk: int | None = None, length: int | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` to the ASGI ``app`` in process (in ``chunk``-byte messages, with a ``Content-Length`` of
    ``length`` when given): (status, headers, raw body)."""
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    headers = [(b"content-type", ctype.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b"", "root_path": "",
             "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, raw
