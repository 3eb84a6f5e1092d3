"""Published reference numbers: ``configs/published.csv``, one row per (model, dataset, horizon, lookback).

Columns: ``model`` (a registry name such as ``dlinear``), ``dataset`` (a benchmark name), ``horizon``, ``lookback``
(the input length L the number was reported at), ``mse`` and ``mae`` (standardized scale; either may be empty)
and ``source``. More rows need no code change; extra columns are ignored. ``forecast benchmark``, ``forecast
dashboard`` and ``benchmarks/accuracy.py`` read it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from forecast.config import CONFIG_DIR
from forecast.errors import ForecastError

PUBLISHED_CSV = CONFIG_DIR / "published.csv"
COLUMNS = ("model", "dataset", "horizon", "lookback", "mse", "mae", "source")

Key = tuple[str, str, int, int]


@dataclass(frozen=True)
class Published:
    """One published result; ``mse``/``mae`` are NaN where the source does not give them."""

    model: str
    dataset: str
    horizon: int
    lookback: int
    mse: float
    mae: float
    source: str


def key(model: str, dataset: str, horizon: int, lookback: int) -> Key:
    """The lookup key: names compared case-insensitively."""
    return (model.lower(), dataset.lower(), int(horizon), int(lookback))


def _float(text: str | None) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


def load_published(path: str | Path | None = None) -> dict[Key, Published]:
    """Read the reference file into ``{key(model, dataset, horizon, lookback): Published}``.

    Lines starting with ``#`` are comments. A missing column, a malformed number or a duplicate key is a
    ForecastError naming the file and line.
    """
    path = Path(path) if path is not None else PUBLISHED_CSV
    if not path.exists():
        raise ForecastError(f"published numbers file '{path}' not found.")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ForecastError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}.")
    out: dict[Key, Published] = {}
    for i, row in enumerate(reader, start=2):
        try:
            item = Published(row["model"].strip().lower(), row["dataset"].strip(), int(row["horizon"]),
                             int(row["lookback"]), _float(row["mse"]), _float(row["mae"]),
                             (row["source"] or "").strip())
        except (TypeError, ValueError) as err:
            raise ForecastError(f"{path}, row {i}: {err}") from None
        k = key(item.model, item.dataset, item.horizon, item.lookback)
        if k in out:
            raise ForecastError(f"{path}, row {i}: duplicate entry for {item.model} {item.dataset} "
                                f"H={item.horizon} L={item.lookback}.")
        out[k] = item
    return out


def lookup(table: dict[Key, Published], model: str, dataset: str, horizon: int, lookback: int) -> Published | None:
    """The published row for this cell, or None."""
    return table.get(key(model, dataset, horizon, lookback))
