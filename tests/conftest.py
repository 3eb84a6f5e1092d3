import atexit
import dataclasses
import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from forecast.data.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ETTH1_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]

# Tests read the benchmark CSVs from ../shared/data unless FORECAST_DATA_DIR says otherwise. A relative
# FORECAST_DATA_DIR (the README's `../shared/data`) is made absolute here, from the directory pytest started in:
# many tests chdir into a tmp dir or start subprocesses there, where the relative path would point nowhere.
if os.environ.get("FORECAST_DATA_DIR"):
    os.environ["FORECAST_DATA_DIR"] = str(Path(os.environ["FORECAST_DATA_DIR"]).expanduser().resolve())
elif SHARED_DATA.is_dir():
    os.environ["FORECAST_DATA_DIR"] = str(SHARED_DATA)

# Caches (models fetched from a store, OrthoTrans bases) go to a folder of this session, never into the checkout.
if not os.environ.get("FORECAST_CACHE_DIR"):
    _CACHE = Path(tempfile.mkdtemp(prefix="forecast-test-cache-"))
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["FORECAST_CACHE_DIR"] = str(_CACHE)

torch.set_num_threads(min(2, torch.get_num_threads()))


def _has_etth1(path: Path) -> bool:
    return (path / "ETTh1.csv.gz").exists() or (path / "ETTh1.csv").exists()


def write_synthetic_etth1(path: Path) -> None:
    """ETTh1's shape without its values: 17,420 hourly rows from 2016-07-01, its seven columns, daily and weekly
    cycles plus noise. Splits, window counts, marks and every code path are the real file's."""
    info = CATALOGUE["ETTh1"]
    t = np.arange(info.rows, dtype=np.float64)
    rng = np.random.default_rng(2021)
    cols = []
    for j in range(info.n_vars):
        level, amp = 5.0 + 3 * j, 1.0 + 0.5 * j
        wave = amp * np.sin(2 * np.pi * t / 24 + j) + 0.5 * amp * np.sin(2 * np.pi * t / 168 + 2 * j)
        cols.append(level + wave + 0.3 * rng.standard_normal(info.rows).cumsum() / np.sqrt(1 + t / 500))
    dates = np.arange(np.datetime64("2016-07-01T00:00"), info.rows, dtype="datetime64[h]").astype("datetime64[s]")
    lines = ["date," + ",".join(ETTH1_COLUMNS)]
    text = np.char.replace(dates.astype(str), "T", " ")
    values = np.stack(cols, axis=1)
    lines += [f"{d},{','.join(f'{v:.6f}' for v in row)}" for d, row in zip(text, values)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


# Without the benchmark files (a clone without ../shared/data, no network), the tests that need ETTh1 run on a
# synthetic file of its shape. It has no published checksum, so the catalogue forgets ETTh1's for this process;
# the tests that check the real file's checksum, or start subprocesses (which have no such patch), ask for
# `real_data_dir` and skip.
REAL_DATA = _has_etth1(Path(os.environ.get("FORECAST_DATA_DIR", SHARED_DATA)))
SHIPPED_CATALOGUE = dict(CATALOGUE)  # the catalogue as the package ships it, before any patch below
if not REAL_DATA:
    synthetic = Path(tempfile.mkdtemp(prefix="forecast-synthetic-data-"))
    atexit.register(shutil.rmtree, synthetic, ignore_errors=True)
    write_synthetic_etth1(synthetic / "ETTh1.csv.gz")
    os.environ["FORECAST_DATA_DIR"] = str(synthetic)
    CATALOGUE["ETTh1"] = dataclasses.replace(CATALOGUE["ETTh1"], sha256=())


@pytest.fixture
def data_dir() -> Path:
    """Where ETTh1 is: the real benchmark files, or a synthetic ETTh1 of the same shape."""
    return Path(os.environ["FORECAST_DATA_DIR"])


@pytest.fixture
def shipped_catalogue() -> dict:
    """The dataset catalogue as the package ships it (with ETTh1's published digest even on synthetic data)."""
    return SHIPPED_CATALOGUE


@pytest.fixture
def real_data_dir(data_dir: Path) -> Path:
    """The real benchmark files (their checksums, subprocesses that load them), else a skip."""
    if not REAL_DATA:
        pytest.skip("the real benchmark files are not here (synthetic ETTh1 only); set FORECAST_DATA_DIR")
    return data_dir
