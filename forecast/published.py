"""Published reference numbers: ``configs/published.yaml``, one entry per (model, dataset, horizon, lookback).

Keys: ``model`` (a registry name such as ``dlinear``), ``dataset`` (a benchmark name), ``horizon``, ``lookback``
(the input length L the number was reported at), ``mse`` and ``mae`` (standardized scale; either may be null)
and ``source``. More entries need no code change; extra keys are ignored. ``forecast benchmark``, ``forecast
dashboard`` and ``benchmarks/accuracy.py`` read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from forecast.config import CONFIG_DIR
from forecast.errors import ForecastError

PUBLISHED = CONFIG_DIR / "published.yaml"
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


def _float(value: object) -> float:
    return math.nan if value is None or (isinstance(value, str) and not value.strip()) else float(value)


def load_published(path: str | Path | None = None) -> dict[Key, Published]:
    """Read the reference file into ``{key(model, dataset, horizon, lookback): Published}``.

    Lines starting with ``#`` are comments. A missing column, a malformed number or a duplicate key is a
    ForecastError naming the file and line.
    """
    import yaml

    path = Path(path) if path is not None else PUBLISHED
    if not path.exists():
        raise ForecastError(f"published numbers file '{path}' not found.")
    try:
        entries = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise ForecastError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(entries, list):
        raise ForecastError(f"{path} must be a list of entries with keys {', '.join(COLUMNS)}.")
    out: dict[Key, Published] = {}
    for i, row in enumerate(entries, start=1):
        missing = [c for c in COLUMNS if not isinstance(row, dict) or c not in row]
        if missing:
            raise ForecastError(f"{path}, entry {i}: missing key(s) {', '.join(missing)}.")
        try:
            item = Published(str(row["model"]).strip().lower(), str(row["dataset"]).strip(), int(row["horizon"]),
                             int(row["lookback"]), _float(row["mse"]), _float(row["mae"]),
                             str(row["source"] or "").strip())
        except (TypeError, ValueError) as err:
            raise ForecastError(f"{path}, entry {i}: {err}") from None
        k = key(item.model, item.dataset, item.horizon, item.lookback)
        if k in out:
            raise ForecastError(f"{path}, entry {i}: duplicate entry for {item.model} {item.dataset} "
                                f"H={item.horizon} L={item.lookback}.")
        out[k] = item
    return out


def lookup(table: dict[Key, Published], model: str, dataset: str, horizon: int, lookback: int) -> Published | None:
    """The published row for this cell, or None."""
    return table.get(key(model, dataset, horizon, lookback))
