import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests read the benchmark CSVs from ../shared/data unless FORECAST_DATA_DIR says otherwise.
if "FORECAST_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["FORECAST_DATA_DIR"] = str(SHARED_DATA)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def data_dir() -> Path:
    path = Path(os.environ.get("FORECAST_DATA_DIR", SHARED_DATA))
    if not (path / "ETTh1.csv.gz").exists() and not (path / "ETTh1.csv").exists():
        pytest.skip(f"benchmark data not found in {path}")
    return path
