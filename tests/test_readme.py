"""The README's Python block runs as it is written: a user copying it into a notebook gets a run and a forecast."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block() -> str:
    section = README.read_text().split("### From Python", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.mark.slow
def test_the_python_block_trains_logs_and_forecasts(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.chdir(tmp_path)
    # The block sets MLflow's tracking URI (a global and the environment variable): both come back afterwards.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    source = data_dir / "ETTh1.csv.gz"
    etth1 = pl.read_csv(gzip.decompress(source.read_bytes()) if source.exists() else data_dir / "ETTh1.csv")
    etth1.tail(400).write_csv(tmp_path / "history.csv")
    scope: dict = {}
    exec(compile(_python_block(), "README.md (From Python)", "exec"), scope)  # noqa: S102 (our own README)
    result, forecast = scope["result"], scope["forecast"]
    assert result.metrics["test_windows"] > 0 and 0 < result.metrics["test_mse"] < 2
    assert list(forecast.columns[:4]) == ["date", "HUFL", "HUFL_lo80", "HUFL_hi80"] and len(forecast) == 24
    assert {"OT", "OT_lo90", "OT_hi90"} <= set(forecast.columns)
    assert np.all(forecast["OT_lo80"] <= forecast["OT"]) and np.all(forecast["OT"] <= forecast["OT_hi80"])
    assert (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
