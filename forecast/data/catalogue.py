"""The ten long-term forecasting benchmarks, with their files, sources, checksums and split rules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from forecast.errors import unknown_key

FILE_SUFFIXES = (".csv", ".gz", ".parquet", ".pq", ".txt")

# Fixed revisions, so a URL always serves the same bytes; the digests below are checked on every read anyway.
_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small"
# The Autoformer/TSLib benchmark collection (Google Drive originally), as plain files on the Hugging Face Hub.
_TSLIB = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/2b66e59ee19dac8f6f19fb5d4997f289fdfea357"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    filename: str  # the uncompressed CSV name; a .gz beside it is accepted too
    url: str
    sha256: tuple[str, ...]  # the accepted digests of the uncompressed file (the same rows with LF or CRLF endings)
    freq: str  # pandas offset alias
    n_vars: int
    rows: int
    split: str  # "ett_hour" | "ett_minute" | "ratio"
    has_header: bool = True  # Solar ships as a headerless, dateless text file
    time_features: bool = True
    horizons: tuple[int, ...] = (96, 192, 336, 720)  # the papers' horizons; the first is a run's default H

    def accepts(self, digest: str) -> bool:
        """Whether a file with this sha256 is this benchmark (an entry without digests accepts any)."""
        return not self.sha256 or digest in self.sha256

    @property
    def split_rule(self) -> str:
        return {"ett_hour": "12/4/4 months", "ett_minute": "12/4/4 months", "ratio": "70/10/20"}[self.split]


CATALOGUE: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("ETTh1", "ETTh1.csv", f"{_ETT}/ETTh1.csv",
                    ("f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",), "h", 7, 17420, "ett_hour"),
        DatasetInfo("ETTh2", "ETTh2.csv", f"{_ETT}/ETTh2.csv",
                    ("a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",), "h", 7, 17420, "ett_hour"),
        DatasetInfo("ETTm1", "ETTm1.csv", f"{_ETT}/ETTm1.csv",
                    ("6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",), "15min", 7, 69680,
                    "ett_minute"),
        DatasetInfo("ETTm2", "ETTm2.csv", f"{_ETT}/ETTm2.csv",
                    ("db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",), "15min", 7, 69680,
                    "ett_minute"),
        DatasetInfo("Weather", "weather.csv", f"{_TSLIB}/weather/weather.csv",
                    ("34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63",), "10min", 21, 52696, "ratio"),
        DatasetInfo("Electricity", "electricity.csv", f"{_TSLIB}/electricity/electricity.csv",
                    ("7e45845d54c5219bad0ae6bc1b5316cf8ff9cead5d33fa998a5a51c2e4a497ad",), "h", 321, 26304, "ratio"),
        DatasetInfo("Traffic", "traffic.csv", f"{_TSLIB}/traffic/traffic.csv",
                    ("cb06463d56fa17d87f47027cd9389ceae82a69eddee51cdb61480e120dab0b16",), "h", 862, 17544, "ratio"),
        DatasetInfo("Exchange", "exchange_rate.csv", f"{_TSLIB}/exchange_rate/exchange_rate.csv",
                    ("d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97",  # LF line endings
                     "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842"),  # CRLF, as _TSLIB serves it
                    "D", 8, 7588, "ratio"),
        DatasetInfo("ILI", "national_illness.csv", f"{_TSLIB}/illness/national_illness.csv",
                    ("8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",  # LF line endings
                     "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a"),  # CRLF, as _TSLIB serves it
                    "W", 7, 966, "ratio", horizons=(24, 36, 48, 60)),  # weekly: LTSF-Linear's and TSLib's
        DatasetInfo("Solar", "solar_AL.txt", f"{_TSLIB}/Solar/solar_AL.txt",
                    ("230327ef72d2abb387939d4a35d6fd34f1066071bc7c40ce7ecf5531a0122ac2",), "10min", 137, 52560, "ratio",
                    has_header=False, time_features=False),
    ]
}


def find(name: str) -> DatasetInfo | None:
    """The catalogue entry for a benchmark ``name`` (case-insensitive), or None (a user's file, or no benchmark)."""
    return None if is_file_dataset(name) else _entry(name)


def _entry(name: str) -> DatasetInfo | None:
    return next((info for key, info in CATALOGUE.items() if key.lower() == name.lower()), None)


def lookup(name: str) -> DatasetInfo:
    """The catalogue entry for ``name`` (case-insensitive), or a ForecastError that suggests the closest."""
    info = _entry(name)
    if info is not None:
        return info
    raise unknown_key("dataset", name, CATALOGUE, f"Known: {', '.join(CATALOGUE)}; or pass a path to your own "
                      "CSV/parquet file (see `forecast datasets`).", cutoff=0.5)


def is_file_dataset(dataset: str) -> bool:
    """Whether ``--dataset`` names a user's file rather than a benchmark: a data file's suffix or a folder in it.
    The one rule for this everywhere (loading, config layers, study names, benchmark plans)."""
    return Path(dataset).suffix.lower() in FILE_SUFFIXES or os.sep in dataset


def default_horizon(dataset: str) -> int | None:
    """A benchmark's default H, the first of its papers' horizons (24 for ILI, 96 for the others); None for a file."""
    info = find(dataset)
    return None if info is None else info.horizons[0]


def dataset_name(dataset: str) -> str:
    """The name runs, experiments and studies use: a benchmark's name as given, a file's stem."""
    return Path(dataset).stem if is_file_dataset(dataset) else dataset
