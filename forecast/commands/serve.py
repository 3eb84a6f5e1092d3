"""``forecast serve``: a logged model behind MLflow's scoring server and the request guard of
:mod:`forecast.inference.server`, on 127.0.0.1 unless asked."""

from __future__ import annotations

import os
import sys

from forecast import artifact
from forecast.commands.flags import check_port, exposure_warning
from forecast.console import console
from forecast.errors import ForecastError
from forecast.inference import server
from forecast.inference.fetch import model_dir
from forecast.process import resume_gc


def serve(model: str, host: str, port: int, workers: int, max_request_mb: float, tracking_uri: str | None,
          quiet: bool) -> None:
    """Check the model and the address, then run uvicorn with ``workers`` processes until Ctrl-C or SIGTERM."""
    if workers < 1:
        raise ForecastError(f"--workers {workers} must be at least 1.")
    if not max_request_mb > 0:
        raise ForecastError(f"--max-request-mb {max_request_mb:g} must be above 0 (default {server.DEFAULT_MAX_MB}).")
    check_port(host, port)
    with model_dir(model, tracking_uri) as local:
        if not (local / "MLmodel").is_file():
            raise ForecastError(f"'{model}' is a model folder without MLflow's MLmodel file; serve a logged model "
                                "(runs:/RUN_ID/model or models:/NAME@ALIAS), or use `forecast predict` on it.")
        meta = artifact.load(artifact.artifact_paths(local), model).meta  # one line now for a damaged model
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.update({server.MODEL_ENV: str(local), server.MAX_BYTES_ENV: str(int(max_request_mb * 2**20)),
                           server.THREADS_ENV: str(threads)})
        # polars, like torch, at the worker's share of the cores: a request's frames are L rows, and waking a pool of
        # threads for each of them cost more than it saved (6% fewer requests a second with 2 workers on 2 cores).
        # Read when a spawned worker imports polars; one worker runs here, where polars is loaded, on every core.
        os.environ.setdefault("POLARS_MAX_THREADS", str(threads))
        exposed = exposure_warning(host)
        if exposed:  # said even with --quiet
            print(exposed, file=sys.stderr, flush=True)
        if not quiet:
            console().print(f"serving {meta.model_name} (L={meta.seq_len}, H={meta.horizon}, {meta.n_vars} columns) "
                            f"from {model}\n  POST http://{host}:{port}/invocations  ({workers} worker(s), "
                            f"{threads} thread(s) each, requests up to {max_request_mb:g} MB); Ctrl-C stops")
        import uvicorn

        resume_gc()  # start-up is over; a single worker serves from this process (forecast.process)
        uvicorn.run("forecast.inference.server:create_app", factory=True, host=host, port=port, workers=workers,
                    log_level="warning" if quiet else "info", access_log=False)
