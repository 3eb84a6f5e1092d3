"""Users' files that once gave a traceback or a misleading line: each is one `error:` line with exit 2 now, in
train and in predict; and a property-based fuzz of the reader, which accepts a file or says in one line why not."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecast.data.loading import read_frame, to_table
from forecast.errors import ForecastError
from tests.helpers import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "artifact_v0_1"
HOURS = [f"2018-06-{1 + h // 24:02d} {h % 24:02d}:00:00" for h in range(200)]


def _csv(header: list[str], rows: list[list[object]], tail: str = "") -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n" + tail).encode()


def _etth1_like(n: int = 200) -> tuple[list[str], list[list[object]]]:
    cols = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    return ["date", *cols], [[HOURS[i], *(round(1 + 0.1 * j + np.sin(i / 5), 4) for j in range(7))] for i in range(n)]


def _with(rows: list[list[object]], row: int, col: int, value: object) -> list[list[object]]:
    out = [list(r) for r in rows]
    out[row][col] = value
    return out


HEADER, ROWS = _etth1_like()
BAD = {
    "integer epoch dates": (_csv(HEADER, [[1529884800 + 3600 * i, *r[1:]] for i, r in enumerate(ROWS)]),
                            "column 'date' holds numbers (1529884800 at data row 1), not dates"),
    "a value too large for float32": (_csv(HEADER, _with(ROWS, 3, 7, "1e200")),
                                      "column 'OT' value 1e+200 at data row 4 is beyond float32's range"),
    "an infinite value": (_csv(HEADER, _with(ROWS, 5, 2, "inf")), "column 'HULL' value inf at data row 6 is infinite"),
    "spaces around a name": (_csv([*HEADER[:-1], " OT "], ROWS), "column ' OT ' has spaces around its name"),
    "a duplicated name": (_csv([*HEADER[:-2], "OT", "OT"], ROWS), "column 'OT' appears more than once in the header"),
    "a latin-1 name": (_csv(HEADER[:-1], [r[:-1] for r in ROWS]).replace(b"LULL", "LÜLL".encode("latin-1")),
                       "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_and_headers_are_one_line_in_train_and_predict(case: str, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    content, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mine.csv"
    path.write_bytes(content)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for argv in (["train", "-d", str(path), "-m", "dlinear", "-L", "24", "-H", "8", "--tracking-uri", uri, "-q"],
                 ["predict", "-m", str(FIXTURES / "dlinear"), "-i", str(path), "-o", str(tmp_path / "fc.csv")]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2, (argv[0], err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv[0], err)
        assert message in err, (argv[0], err)
        assert "Traceback" not in out + err and "Warning" not in err
    assert not (tmp_path / "fc.csv").exists() and not (tmp_path / "m.db").exists()


def test_blank_lines_at_the_end_are_ignored(tmp_path: Path, capsys) -> None:
    path = tmp_path / "history.csv"
    path.write_bytes(_csv(HEADER, ROWS, tail="\n\n,,,,,,,\n"))
    out = tmp_path / "fc.csv"
    code, _, err = run_cli(["predict", "-m", str(FIXTURES / "dlinear"), "-i", str(path), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    assert pl.read_csv(out)["date"][0] == "2018-06-09 08:00:00"  # the hour after the last real row


def test_a_replacement_character_written_as_utf8_is_a_name_not_a_decoding_error(tmp_path: Path) -> None:
    """Weather's published header has ``SWDR (W/m\ufffd)`` as valid UTF-8: a user's copy of it is their data, read
    with its names as written; the same name from latin-1 bytes (``W/m²``) is still refused."""
    header = [*HEADER[:-1], "SWDR (W/m\ufffd)"]
    table = to_table(read_frame(_csv(header, ROWS), "weather.csv"), "weather.csv")
    assert table.columns[-1] == "SWDR (W/m\ufffd)" and table.values.shape == (200, 7)
    latin1 = _csv(HEADER, ROWS).replace(b"OT", "W/m²".encode("latin-1"))
    with pytest.raises(ForecastError, match="is not UTF-8 text"):
        read_frame(latin1, "weather.csv")
    path = tmp_path / "weather.csv"
    path.write_bytes(_csv(header, ROWS))
    assert read_frame(path, "weather.csv").columns[-1] == "SWDR (W/m\ufffd)"


def test_a_truncated_gzip_and_a_missing_data_dir_are_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mine.csv.gz"
    path.write_bytes(gzip.compress(_csv(HEADER, ROWS))[:300])
    code, _, err = run_cli(["train", "-d", str(path), "-m", "dlinear", "-q"], capsys)
    assert code == 2 and "is cut short (the gzip stream ends early)" in err and "aborted" not in err, err
    code, _, err = run_cli(["train", "-d", "ETTh1", "-m", "dlinear", "--data-dir", str(tmp_path / "nope"), "-q"],
                           capsys)
    assert code == 2 and f"--data-dir '{tmp_path / 'nope'}' is not a folder" in err, err


# -- the fuzz ----------------------------------------------------------------------------------------------------
NAMES = st.one_of(st.sampled_from(["date", "OT", "a", " b", "c ", "a_duplicated_0", "HUFL"]),
                  st.text(min_size=0, max_size=6))
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12), st.sampled_from(
        ["", "nan", "inf", "-inf", "1e308", "1e-320", "abc", "2018-06-01 00:00:00", "2018-06-01T01:00:00+02:00",
         "null", " 3 ", "1,5"]))
DATES = st.one_of(st.sampled_from(HOURS), st.integers(0, 2 * 10**9), st.sampled_from(["", "tomorrow", "2018-13-01"]))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    n_cols = draw(st.integers(1, 4))
    header = ["date", *(draw(NAMES) for _ in range(n_cols))] if draw(st.booleans()) else [
        draw(NAMES) for _ in range(n_cols + 1)]
    n_rows = draw(st.integers(0, 12))
    sorted_dates = draw(st.booleans())
    rows = [[HOURS[i] if sorted_dates else draw(DATES), *(draw(CELLS) for _ in range(n_cols))] for i in range(n_rows)]
    return _csv(header, rows, tail=draw(st.sampled_from(["", "\n", "\n\n", ",,\n"])))


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 10))
    kind = draw(st.sampled_from(["datetime", "string", "int", "float", "date"]))
    start = np.datetime64("2018-06-01T00:00:00.000")  # ms: a resolution polars takes
    dates = {"datetime": pl.Series("date", start + np.arange(n) * np.timedelta64(1, "h")),
             "string": pl.Series("date", HOURS[:n]), "int": pl.Series("date", np.arange(n) * 3600),
             "float": pl.Series("date", np.arange(n) * 1.5),
             "date": pl.Series("date", start + np.arange(n) * np.timedelta64(1, "D")).cast(pl.Date)}[kind]
    values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=n, max_size=n))
    frame = pl.DataFrame([dates, pl.Series(draw(st.sampled_from(["OT", "x", " y"])), values, dtype=pl.Float64)])
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


def _read(source: Path | bytes, name: str) -> None:
    """The reader's property: a Table of finite float32 values, or one ForecastError line; nothing else escapes."""
    try:
        table = to_table(read_frame(source, name), name)
    except ForecastError as err:
        assert str(err) and "\n" not in str(err), str(err)
        return
    assert table.values.dtype == np.float32 and np.isfinite(table.values).all()
    assert len(table.dates) == table.values.shape[0] >= 1 and table.values.shape[1] == len(table.columns) >= 1
    assert all(c == c.strip() and c for c in table.columns) and len(set(table.columns)) == len(table.columns)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_fuzz_the_csv_reader(content: bytes) -> None:
    _read(content, "fuzz.csv")


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(parquet_files())
def test_fuzz_the_parquet_reader(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzz.parquet"
    path.write_bytes(content)
    _read(path, "fuzz.parquet")


def _runs_in(db: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    if not db.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return [r.info.status for r in client.search_runs([e.experiment_id for e in client.search_experiments()])]


@pytest.mark.parametrize(("extra", "message"), [
    (["--tracking-uri", "bogus://nowhere"], "--tracking-uri 'bogus://nowhere' has the scheme 'bogus'"),
    (["--batch-size", "100000"], "train.drop_last leaves no train batch"),
    pytest.param(["--accelerator", "gpu"], "train.accelerator 'gpu' / train.devices 1: No supported gpu backend",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_flags_found_by_a_new_user_are_one_line_and_leave_no_run(extra: list[str], message: str, data_dir: Path,
                                                                  tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "m.db"
    argv = ["train", "-d", "ETTh1", "-m", "dlinear", "--epochs", "1", "-q"]
    if "--tracking-uri" not in extra:
        argv += ["--tracking-uri", f"sqlite:///{db}"]
    code, out, err = run_cli([*argv, *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err
    assert _runs_in(db) == []  # refused before any run was created


def test_train_checks_the_frequency_as_predict_does(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [r for i, r in enumerate(ROWS) if i not in (100, 101, 102)]  # three hours missing
    path = tmp_path / "gappy.csv"
    path.write_bytes(_csv(HEADER, rows))
    argv = ["train", "-d", str(path), "-m", "dlinear", "-L", "24", "-H", "8", "--epochs", "1", "-q",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "timestamp 2018-06-05 07:00:00 at data row 101 breaks the 'h' frequency" in err, err
    assert "--fill ffill or --fill interpolate adds and fills them" in err
    code, _, err = run_cli([*argv, "--fill", "interpolate"], capsys)  # the three hours added, then filled
    assert code == 0, err
    tune = ["tune", *argv[1:], "--trials", "1", "--storage", str(tmp_path / "optuna.db"), "--fill", "ffill"]
    code, _, err = run_cli(tune, capsys)  # tune takes --fill as train does
    assert code == 0, err


def test_fill_adds_the_missing_steps_of_a_regular_series_and_leaves_an_irregular_one() -> None:
    from forecast.data.gaps import regrid
    from forecast.data.loading import Table

    hours = np.arange(np.datetime64("2018-06-01T00"), np.datetime64("2018-06-01T10"), np.timedelta64(1, "h"))
    full = Table(hours.astype("datetime64[ns]"), np.arange(20, dtype=np.float32).reshape(10, 2), ["a", "b"])
    keep = np.array([0, 1, 2, 5, 6, 9])
    got = regrid(Table(full.dates[keep], full.values[keep], full.columns), "h")
    assert (got.dates == full.dates).all() and got.columns == ["a", "b"]
    assert np.isnan(got.values[[3, 4, 7, 8]]).all() and (got.values[keep] == full.values[keep]).all()
    assert regrid(full, "h") is full  # nothing missing
    odd = Table(np.append(full.dates[:3], full.dates[3] + np.timedelta64(30, "m")), full.values[:4], full.columns)
    assert regrid(odd, "h") is odd  # a half-hour stamp is off the grid: check_frequency names it
    weeks = pd.date_range("2020-01-07", periods=6, freq="W-TUE").to_numpy()
    got = regrid(Table(np.delete(weeks, 2), np.ones((5, 1), np.float32), ["y"]), "W-TUE")
    assert (got.dates == weeks.astype("datetime64[ns]")).all() and np.isnan(got.values[2, 0])


def test_a_column_that_turns_decimal_after_ten_thousand_rows_is_read(tmp_path: Path) -> None:
    """Column types come from the first 10,000 rows; a column of whole numbers with a decimal further down (TimeXer's
    EPF files) is read as numbers, not refused."""
    lines = ["date,load,OT"] + [f"2020-01-01 00:00:00,{i},1.5" for i in range(10_500)]
    lines[10_200] = "2020-01-01 00:00:00,2455.5,1.5"
    frame = read_frame("\n".join(lines).encode(), "epf.csv")
    assert frame["load"].dtype == pl.Float64 and frame["load"][10_199] == 2455.5
