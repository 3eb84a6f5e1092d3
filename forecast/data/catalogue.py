"""The ten long-term forecasting benchmarks, with their files, sources, checksums and split rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from forecast.errors import unknown_key

FILE_SUFFIXES = (".csv", ".gz", ".parquet", ".pq", ".txt")

_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small"
# The Autoformer/TSLib benchmark collection (Google Drive originally) mirrored as plain files.
_TSLIB = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    filename: str  # the uncompressed CSV name; a .gz beside it is accepted too
    url: str
    sha256: str | None  # of the uncompressed file, where known
    freq: str  # pandas offset alias
    n_vars: int
    rows: int
    split: str  # "ett_hour" | "ett_minute" | "ratio"
    has_header: bool = True  # Solar ships as a headerless, dateless text file
    time_features: bool = True

    @property
    def split_rule(self) -> str:
        return {"ett_hour": "12/4/4 months", "ett_minute": "12/4/4 months", "ratio": "70/10/20"}[self.split]


CATALOGUE: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("ETTh1", "ETTh1.csv", f"{_ETT}/ETTh1.csv",
                    "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066", "h", 7, 17420, "ett_hour"),
        DatasetInfo("ETTh2", "ETTh2.csv", f"{_ETT}/ETTh2.csv",
                    "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b", "h", 7, 17420, "ett_hour"),
        DatasetInfo("ETTm1", "ETTm1.csv", f"{_ETT}/ETTm1.csv",
                    "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e", "15min", 7, 69680,
                    "ett_minute"),
        DatasetInfo("ETTm2", "ETTm2.csv", f"{_ETT}/ETTm2.csv",
                    "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd", "15min", 7, 69680,
                    "ett_minute"),
        DatasetInfo("Weather", "weather.csv", f"{_TSLIB}/weather/weather.csv",
                    "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63", "10min", 21, 52696, "ratio"),
        DatasetInfo("Electricity", "electricity.csv", f"{_TSLIB}/electricity/electricity.csv", None, "h", 321,
                    26304, "ratio"),
        DatasetInfo("Traffic", "traffic.csv", f"{_TSLIB}/traffic/traffic.csv", None, "h", 862, 17544, "ratio"),
        DatasetInfo("Exchange", "exchange_rate.csv", f"{_TSLIB}/exchange_rate/exchange_rate.csv",
                    "d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97", "D", 8, 7588, "ratio"),
        DatasetInfo("ILI", "national_illness.csv", f"{_TSLIB}/illness/national_illness.csv",
                    "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395", "W", 7, 966, "ratio"),
        DatasetInfo("Solar", "solar_AL.txt", f"{_TSLIB}/Solar/solar_AL.txt", None, "10min", 137, 52560, "ratio",
                    has_header=False, time_features=False),
    ]
}


def lookup(name: str) -> DatasetInfo:
    """The catalogue entry for ``name`` (case-insensitive), or a ForecastError that suggests the closest."""
    for key, info in CATALOGUE.items():
        if key.lower() == name.lower():
            return info
    raise unknown_key("dataset", name, CATALOGUE, f"Known: {', '.join(CATALOGUE)}; or pass a path to your own "
                      "CSV/parquet file (see `forecast datasets`).", cutoff=0.5)


def is_file_dataset(dataset: str) -> bool:
    """Whether ``--dataset`` names a user's file rather than a benchmark: a data file's suffix or a folder in it.
    The one rule for this everywhere (loading, config layers, study names, benchmark plans)."""
    return Path(dataset).suffix.lower() in FILE_SUFFIXES or os.sep in dataset


def dataset_name(dataset: str) -> str:
    """The name runs, experiments and studies use: a benchmark's name as given, a file's stem."""
    return Path(dataset).stem if is_file_dataset(dataset) else dataset
