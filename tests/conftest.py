import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests read the benchmark CSVs from ../shared/data unless FORECAST_DATA_DIR says otherwise. A relative
# FORECAST_DATA_DIR (the README's `../shared/data`) is made absolute here, from the directory pytest started in:
# many tests chdir into a tmp dir or start subprocesses there, where the relative path would point nowhere.
if os.environ.get("FORECAST_DATA_DIR"):
    os.environ["FORECAST_DATA_DIR"] = str(Path(os.environ["FORECAST_DATA_DIR"]).expanduser().resolve())
elif SHARED_DATA.is_dir():
    os.environ["FORECAST_DATA_DIR"] = str(SHARED_DATA)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def data_dir() -> Path:
    path = Path(os.environ.get("FORECAST_DATA_DIR", SHARED_DATA))
    if not (path / "ETTh1.csv.gz").exists() and not (path / "ETTh1.csv").exists():
        pytest.skip(f"benchmark data not found in {path}")
    return path
