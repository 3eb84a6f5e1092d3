"""``forecast predict``: run it, then say what was written or print the forecast. Imports no Lightning."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from forecast.conformal import min_windows
from forecast.console import console, frame_table, metric_table
from forecast.errors import ForecastError
from forecast.inference.io import STDIO
from forecast.inference.predict import run_predict
from forecast.inference.rolling import ADAPTIVE_RATE, interval_rows
from forecast.process import sigterm_as_interrupt


def predict(model: str, input_path: Path, output: Path | None, horizon: int | None, layout: str, fill: str | None,
            rolling: bool, tracking_uri: str | None, quiet: bool, level: str | None = None,
            quantiles: str | None = None, future: Path | None = None, adaptive: bool = False,
            adaptive_rate: float | None = None) -> None:
    """``forecast predict``: run it (:func:`run_predict`), then say what was written or print the forecast."""
    if adaptive_rate is not None and not adaptive:
        raise ForecastError("--adaptive-rate sets the step of --adaptive intervals; add --adaptive (with --rolling).")
    rate = (ADAPTIVE_RATE if adaptive_rate is None else adaptive_rate) if adaptive else None
    with sigterm_as_interrupt():  # a SIGTERM removes the temp output file like Ctrl-C does (exit 130)
        result = run_predict(model, input_path, output, horizon, layout, fill, rolling, tracking_uri, level=level,
                             quantiles=quantiles, future_path=future, adaptive=rate)
    for line in [*result.warnings, *_unbounded(result.frame)]:
        print(f"warning: {line}", file=sys.stderr)
    if quiet:
        return
    piped = output is not None and str(output) == STDIO
    out = console(stderr=piped)  # with the forecast on stdout, what is said about it goes to stderr
    meta, rl = result.meta, result.rolling
    if rl is not None:
        if rl.metrics:
            m = rl.metrics
            out.print(f"{meta.model_name} rolling forecast: {int(m['windows']):,} scored windows of "
                      f"{rl.windows:,}, {rl.dates.shape[1]} steps each")
            out.print(metric_table([("MSE", m["mse"], m["mse_orig"]), ("MAE", m["mae"], m["mae_orig"]),
                                    *interval_rows(m)]))
        else:
            out.print(f"{rl.windows:,} windows forecast; no metrics: the input has no window with all "
                      f"{rl.dates.shape[1]} actuals after it (it needs at least L + h = "
                      f"{meta.seq_len + rl.dates.shape[1]} rows).")
    if result.output is not None and result.frame is not None and not piped:
        shape = layout if meta.date_column in result.frame.columns or "origin" in result.frame.columns else "long"
        out.print(f"wrote {result.frame.height:,} rows ({shape}) to {result.output}")
    elif result.frame is not None and not piped:
        wide = layout == "wide" and meta.date_column in result.frame.columns  # long input comes back long
        steps = result.frame.height if wide else result.frame.height // meta.n_targets
        out.print(frame_table(result.frame, f"{meta.model_name}: the next {steps} steps after "
                                             f"{result.rows_in:,} input rows"))


def _unbounded(frame: Any) -> list[str]:
    """A line per interval level the model could not bound: its validation split had too few windows for it."""
    if frame is None:
        return []
    levels = sorted({m.group(1) for c in frame.columns if (m := re.search(r"(?:^|_)lo([\d.]+)$", c))
                     and not frame[c].is_finite().all()}, key=float)
    return [f"the {lv}% interval is unbounded (-inf to inf): the model's validation split held fewer than the "
            f"{min_windows(float(lv) / 100)} windows that calibrate it; retrain with more validation rows to bound it."
            for lv in levels]
