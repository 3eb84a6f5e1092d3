"""The paper protocol: split borders, window counts, train-only scaling, no dropped windows, validation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from forecast.config import DataConfig
from forecast.data.datamodule import ForecastDataModule
from forecast.data.series import load_series, split_borders
from forecast.data.timefeatures import time_features
from forecast.errors import ForecastError


@pytest.mark.parametrize(("L", "H", "counts"), [(96, 96, (8449, 2785, 2785)), (336, 96, (8209, 2785, 2785)),
                                                (96, 720, (7825, 2161, 2161))])
def test_etth1_borders_and_window_counts(data_dir: Path, L: int, H: int, counts: tuple[int, int, int]) -> None:
    dm = ForecastDataModule(DataConfig("ETTh1", seq_len=L, horizon=H), progress=False)
    assert dm.series.borders == {"train": (0, 8640), "val": (8640 - L, 11520), "test": (11520 - L, 14400)}
    assert tuple(len(dm.dataset(s)) for s in ("train", "val", "test")) == counts


def test_ratio_split_starts_val_and_test_seq_len_early() -> None:
    b = split_borders("ratio", 1000, 24)
    assert b == {"train": (0, 700), "val": (676, 800), "test": (776, 1000)}
    assert split_borders("ett_minute", 69680, 96)["test"] == (46080 - 96, 57600)


def test_windows_are_the_right_rows(data_dir: Path) -> None:
    dm = ForecastDataModule(DataConfig("ETTh1", seq_len=96, horizon=24), progress=False)
    s = dm.series
    start = s.borders["test"][0]
    batch = dm.dataset("test")[[0, 5, 2000]]
    for j, i in enumerate([0, 5, 2000]):
        np.testing.assert_array_equal(batch["x"][j].numpy(), s.scaled[start + i:start + i + 96])
        np.testing.assert_array_equal(batch["y"][j].numpy(), s.scaled[start + i + 96:start + i + 120])
        np.testing.assert_array_equal(batch["y_mark"][j].numpy(), s.marks[start + i + 96:start + i + 120])


@pytest.mark.parametrize("batch_size", [1, 7, 32, 1000, 4096])
def test_no_val_or_test_window_is_dropped(data_dir: Path, batch_size: int) -> None:
    dm = ForecastDataModule(DataConfig("ETTh1", seq_len=96, horizon=96), batch_size=batch_size,
                            eval_batch_size=batch_size, progress=False)
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        firsts = torch.cat([b["y"][:, 0, 0] for b in loader])
        assert len(firsts) == len(dm.dataset(split)) == 2785
        expected = torch.from_numpy(dm.series.scaled[dm.series.borders[split][0] + 96:][:2785, 0])
        torch.testing.assert_close(firsts, expected)  # every window, in order, once
    seen = torch.cat([b["y"][:, 0, 0] for b in dm.train_dataloader()])
    assert len(seen) == 8449  # the train loader does not drop either; it shuffles


@pytest.mark.parametrize("drop_last", [True, False])
def test_reference_shuffle_yields_the_reference_loops_train_batches(drop_last: bool) -> None:
    """train.shuffle=reference: per epoch, the batches torch's DataLoader yields in the reference loop, which makes
    a shuffled train loader, a shuffled val loader and an in-order test loader anew every epoch, all drawing from
    the global RNG that the model's init has moved."""
    from torch.utils.data import DataLoader

    from forecast.data.windows import ReferenceBatchSampler

    n_train, batch = 103, 8
    torch.manual_seed(7)
    torch.nn.Linear(5, 3)  # a model's init moves the global stream
    origin = torch.get_rng_state()
    train = DataLoader(range(n_train), batch_size=batch, shuffle=True, drop_last=drop_last)
    val = DataLoader(range(40), batch_size=batch, shuffle=True, drop_last=True)
    test = DataLoader(range(30), batch_size=batch, shuffle=False)
    expected = []
    for _ in range(3):
        expected.append([b.tolist() for b in train])
        for loader in (val, test):
            for _ in loader:
                pass
    sampler = ReferenceBatchSampler(n_train, batch, drop_last, torch.Generator().set_state(origin))
    got = [[b.tolist() for b in sampler] for _ in range(3)]
    assert got == expected
    assert len(sampler) == len(got[0]) == (12 if drop_last else 13) and got[0] != got[1]
    skipping_test = ReferenceBatchSampler(n_train, batch, drop_last, torch.Generator().set_state(origin))
    assert [b.tolist() for b in skipping_test] == got[0]  # the same first epoch from the same state


def test_dlinear_starts_where_the_reference_run_does(data_dir: Path) -> None:
    """DLinear's defaults (configs/dlinear.yaml) replay LTSF-Linear's run for the seed: the same initial weights
    (its seasonal then trend Linear(L, H)) and the same first train batch as its DataLoader draws next."""
    from torch.utils.data import DataLoader

    from forecast.resolve import resolve
    from forecast.pipeline import build

    cfg = resolve("dlinear", "ETTh1", {"data.horizon": 96})
    assert cfg.train.shuffle == "reference" and cfg.train.drop_last and cfg.data.seq_len == 336
    dm, module = build(cfg, progress=False)
    torch.manual_seed(cfg.train.seed)
    seasonal, trend = torch.nn.Linear(336, 96), torch.nn.Linear(336, 96)
    assert torch.equal(module.model.backbone.seasonal.linear.weight, seasonal.weight)
    assert torch.equal(module.model.backbone.trend.linear.bias, trend.bias)
    train = dm.dataset("train")
    first = next(iter(DataLoader(range(len(train)), batch_size=32, shuffle=True, drop_last=True)))
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["x"], train[first]["x"]) and len(dm.train_dataloader()) == 8209 // 32


def test_dlinear_average_init_starts_where_the_first_release_does(data_dir: Path) -> None:
    """``model.init=average`` (LTSF-Linear at 92994e1): every weight 1/L, the biases of its seasonal then trend
    Linear(L, H), then its unused Linear_Decoder's draws, then the same first train batch as its DataLoader draws."""
    from torch.utils.data import DataLoader

    from forecast.pipeline import build
    from forecast.resolve import resolve

    cfg = resolve("dlinear", "ETTh1", {"data.horizon": 96, "data.features": "S", "data.target": "OT",
                                       "model.init": "average"})
    dm, module = build(cfg, progress=False)
    torch.manual_seed(cfg.train.seed)
    seasonal, trend, _decoder = (torch.nn.Linear(336, 96) for _ in range(3))
    backbone = module.model.backbone
    for ours, theirs in ((backbone.seasonal.linear, seasonal), (backbone.trend.linear, trend)):
        assert torch.equal(ours.weight, torch.full((96, 336), 1 / 336)) and torch.equal(ours.bias, theirs.bias)
    train = dm.dataset("train")
    first = next(iter(DataLoader(range(len(train)), batch_size=32, shuffle=True, drop_last=True)))
    assert torch.equal(next(iter(dm.train_dataloader()))["x"], train[first]["x"])
    with pytest.raises(ForecastError, match=r"init must be one of default, average, got 'zeros'"):
        resolve("dlinear", "ETTh1", {"model.init": "zeros"})
    from forecast.models import ModelContext, build_config, create_model

    per_channel = create_model("dlinear", build_config("dlinear", {"individual": True, "init": "average"}),
                               ModelContext(seq_len=48, horizon=12, n_vars=3, n_marks=4)).backbone
    for head in (per_channel.seasonal, per_channel.trend):
        assert torch.equal(head.weight, torch.full((3, 12, 48), 1 / 48))


def test_dlinear_univariate_replays_the_first_release_script(real_data_dir: Path, tmp_path: Path) -> None:
    """cure-lab/LTSF-Linear's univariate ETTh1 script (92994e1) records mse and mae above each run; DLinear S at
    its settings and ``model.init=average`` gives them on the subset its test loader kept (drop_last)."""
    from forecast.pipeline import TrainOptions, train
    from forecast.resolve import resolve

    cfg = resolve("dlinear", "ETTh1", {"data.horizon": 96, "data.features": "S", "data.target": "OT",
                                       "model.init": "average"})
    got = train(cfg, TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False)).metrics
    assert got["test_mse_published"] == pytest.approx(0.05591415613889694, rel=1e-5)
    assert got["test_mae_published"] == pytest.approx(0.1803210824728012, rel=1e-5)


def test_train_drop_last_drops_only_the_last_partial_train_batch(data_dir: Path) -> None:
    dm = ForecastDataModule(DataConfig("ETTh1", seq_len=96, horizon=96), batch_size=32, eval_batch_size=32,
                            progress=False, drop_last=True)
    sizes = [len(b["y"]) for b in dm.train_dataloader()]
    assert sizes == [32] * (8449 // 32)  # 264 full batches; the 8449th window waits for another epoch's shuffle
    drawn = [i for batch in dm.train_dataloader().sampler for i in batch]
    assert len(set(drawn)) == 8448 and set(drawn) <= set(range(8449)) and drawn != sorted(drawn)  # distinct, shuffled
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        assert sum(len(b["y"]) for b in loader) == len(dm.dataset(split)) == 2785  # never dropped there
    big = ForecastDataModule(DataConfig("ETTh1", seq_len=96, horizon=96), batch_size=9000, series=dm.series,
                             drop_last=True)
    with pytest.raises(ForecastError, match=r"leaves no train batch: the train split has 8449 windows, fewer than "
                                            r"a batch of 9000; lower --batch-size or set train.drop_last=false"):
        big.train_dataloader()
    from types import SimpleNamespace

    half = ForecastDataModule(DataConfig("ETTh1", seq_len=96, horizon=96), batch_size=4300, series=dm.series,
                              drop_last=True)
    half.trainer = SimpleNamespace(global_rank=0, world_size=2)  # DDP: each rank draws ceil(8449 / 2) = 4225
    with pytest.raises(ForecastError, match=r"has 8449 windows, 4225 per process of 2, fewer than a batch of 4300"):
        half.train_dataloader()
    from forecast.resolve import resolve

    for key in ("drop_last", "compile"):  # every switch of every section goes through the config builders
        with pytest.raises(ForecastError, match=f"train.{key} must be true or false, got 'yes'"):
            resolve("dlinear", "ETTh1", {f"train.{key}": "yes"})


def _write_csv(path: Path, dates: np.ndarray, values: np.ndarray, columns: list[str]) -> Path:
    df = pd.DataFrame(values, columns=columns)
    df.insert(0, "date", pd.DatetimeIndex(dates).strftime("%Y-%m-%d %H:%M:%S"))
    df.to_csv(path, index=False)
    return path


def test_scaler_sees_train_rows_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    dates = pd.date_range("2020-01-01", periods=n, freq="h").to_numpy()
    values = rng.normal(size=(n, 3)).astype(np.float32)
    a = load_series(DataConfig(str(_write_csv(tmp_path / "a.csv", dates, values, ["a", "b", "c"])), 24, 12))
    changed = values.copy()
    changed[700:] = changed[700:] * 50 + 7  # val and test rows only
    b = load_series(DataConfig(str(_write_csv(tmp_path / "b.csv", dates, changed, ["a", "b", "c"])), 24, 12))
    assert a.borders["train"] == (0, 700)
    np.testing.assert_allclose(a.mean, values[:700].astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(a.std, values[:700].astype(np.float64).std(0), rtol=1e-6)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(a.scaled[:700], b.scaled[:700])
    changed_train = values.copy()
    changed_train[10] += 5
    c = load_series(DataConfig(str(_write_csv(tmp_path / "c.csv", dates, changed_train, ["a", "b", "c"])), 24, 12))
    assert not np.array_equal(a.mean, c.mean)


def test_time_features_hourly() -> None:
    dates = pd.date_range("2016-07-01", periods=48, freq="h").to_numpy()
    f = time_features(dates, "h")
    assert f.shape == (48, 4)
    assert f.min() >= -0.5 and f.max() <= 0.5
    assert f[0, 0] == -0.5 and f[23, 0] == 0.5  # hour/23 - 0.5


def test_mark_freq_h_gives_the_official_hourly_marks_on_minute_data(tmp_path: Path) -> None:
    """10-minute data: 5 marks by default (the minute first); data.mark_freq=h: the 4 hourly ones that the
    official iTransformer/S-Mamba/Flowformer runs use (run.py's --freq h)."""
    dates = pd.date_range("2021-03-01", periods=600, freq="10min")
    path = tmp_path / "ten_minutes.csv"
    pd.DataFrame({"date": dates, "a": np.arange(600.0), "b": np.sin(np.arange(600.0))}).to_csv(path, index=False)
    native = load_series(DataConfig(str(path), 24, 12), progress=False)
    hourly = load_series(DataConfig(str(path), 24, 12, mark_freq="h"), progress=False)
    assert native.freq == hourly.freq == "10min"
    assert native.marks.shape == (600, 5) and hourly.marks.shape == (600, 4)
    np.testing.assert_array_equal(hourly.marks, native.marks[:, 1:])  # minute/59 - 0.5 is the extra first column
    np.testing.assert_array_equal(hourly.marks, time_features(dates.to_numpy(), "h"))


def test_flowformer_drops_the_marks_on_weather_only() -> None:
    """Weather spans one year, so its val/test day-of-year marks lie outside the train range: Flowformer (which
    adds the mark embedding to every token) reads no marks there; every other cell keeps the official ones."""
    from forecast.resolve import resolve

    assert resolve("flowformer", "Weather").data.time_features is False
    assert resolve("flowformer", "Weather", {"data.time_features": True}).data.time_features is True
    for dataset in ("ETTh1", "ETTm1", "Electricity", "Traffic"):
        assert resolve("flowformer", dataset).data.time_features is True
    for model in ("itransformer", "iflowformer", "smamba"):
        assert resolve(model, "Weather").data.time_features is True


def test_thuml_family_configs_use_hourly_marks_and_keep_the_hashes_of_hourly_data() -> None:
    from forecast.benchmark.grid import config_hash
    from forecast.resolve import resolve

    for model in ("itransformer", "iflowformer", "smamba", "flowformer"):
        assert resolve(model, "Weather").data.mark_freq == "h"
        assert resolve(model, "ETTm1").data.mark_freq == "h"
        etth1 = resolve(model, "ETTh1")
        assert etth1.data.mark_freq is None  # "h" on hourly data is the default: the same marks and config
        assert config_hash(etth1) == config_hash(resolve(model, "ETTh1", {"data.mark_freq": None}))
    assert resolve("dlinear", "Weather").data.mark_freq is None
    weather = resolve("itransformer", "Weather")
    assert config_hash(weather) != config_hash(resolve("itransformer", "Weather", {"data.mark_freq": None}))
    # an unset key is left out of the hash, so cells recorded before it existed keep their hashes
    import hashlib
    import json

    doc = etth1.to_dict()
    for key in ("data_dir", "num_workers", "mark_freq", "split", "fill", "features", "target", "past_covariates",
                "future_covariates"):
        doc["data"].pop(key)
    for key in ("drop_last", "shuffle", "intervals", "quantiles", "published_drop_last"):
        doc["train"].pop(key)
    old = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()
    assert config_hash(etth1) == old[:16]
    # train.drop_last and train.shuffle (newer still) change the hash only away from their defaults
    default = config_hash(resolve("itransformer", "ETTh1"))
    for key, value in (("train.drop_last", False), ("train.shuffle", "seed")):
        assert config_hash(resolve("itransformer", "ETTh1", {key: value})) == default
    for key, value in (("train.drop_last", True), ("train.shuffle", "reference")):
        assert config_hash(resolve("itransformer", "ETTh1", {key: value})) != default


def _bad_csvs(tmp: Path) -> dict[str, tuple[str, str]]:
    good = "date,a,b\n" + "".join(f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{i},{2 * i}\n" for i in range(200))
    lines = good.splitlines()
    cases = {
        "nodate": ("x,a,b\n" + "\n".join(f"{i},{i},{i}" for i in range(200)),
                   r"has no 'date' column \(found: x, a, b\)"),
        "renamed": ("when,a,b\n" + "\n".join(lines[1:]),
                    "no 'date' column, but its first column 'when' holds dates; rename that column to 'date'"),
        "semicolons": ("\n".join(x.replace(",", ";") for x in lines), r"looks ';'-separated .*'date;a;b'\); save it"),
        "tabs": ("\n".join(x.replace(",", "\t") for x in lines), r"looks tab-separated .*'date\\ta\\tb'"),
        "text": ("\n".join(lines[:5] + ["2020-01-01 04:00:00,abc,1"] + lines[6:]), "non-numeric value 'abc'"),
        "nan": ("\n".join(lines[:5] + ["2020-01-01 04:00:00,,1"] + lines[6:]), "empty or NaN value"),
        "baddate": ("\n".join(lines[:3] + ["yesterday,1,1"] + lines[4:]), "unparseable date 'yesterday'"),
        "dup": ("\n".join(lines[:4] + [lines[3]] + lines[4:]), "duplicated timestamp"),
        "unsorted": ("\n".join([lines[0], lines[2], lines[1]] + lines[3:]), "not sorted"),
        "empty": ("", "is empty"),
    }
    out = {}
    for name, (text, msg) in cases.items():
        path = tmp / f"{name}.csv"
        path.write_text(text)
        out[name] = (str(path), msg)
    return out


def test_custom_csv_validation(tmp_path: Path) -> None:
    for name, (path, message) in _bad_csvs(tmp_path).items():
        with pytest.raises(ForecastError, match=message):
            load_series(DataConfig(path, 24, 12))


def test_seq_len_plus_horizon_longer_than_a_split(data_dir: Path) -> None:
    with pytest.raises(ForecastError, match=r"the val split of ETTh1 leaves no window of seq_len 96 \+ horizon 2900 "
                                            r"\(train 8,640 rows \(5,645 windows\), val 2,880 rows \(0 windows\)"):
        load_series(DataConfig("ETTh1", seq_len=96, horizon=2900))


def test_split_by_dates_and_by_fractions(data_dir: Path) -> None:
    from forecast.data.series import custom_borders

    s = load_series(DataConfig("ETTh1", seq_len=96, horizon=24, split="2017-07-01,2017-10-01 06:00"))
    val0, test0 = s.borders["val"][0] + 96, s.borders["test"][0] + 96
    assert str(s.dates[val0])[:19] == "2017-07-01T00:00:00" and s.dates[val0 - 1] < np.datetime64("2017-07-01")
    assert str(s.dates[test0])[:19] == "2017-10-01T06:00:00" and s.borders["test"][1] == len(s.dates)
    assert s.borders["train"] == (0, val0)
    # the scaler sees the train rows only, which the split moved
    np.testing.assert_allclose(s.mean, s.raw[:val0].astype(np.float64).mean(axis=0), rtol=1e-6)
    dates = s.dates
    assert custom_borders("0.7,0.1,0.2", dates, 96) == split_borders("ratio", len(dates), 96)
    assert custom_borders("0.7,0.1", dates, 96) == split_borders("ratio", len(dates), 96)
    b = custom_borders("0.5,0.25", dates, 10)
    assert b["train"] == (0, 8710) and b["val"] == (8700, 13065) and b["test"] == (13055, 17420)


@pytest.mark.parametrize(("split", "message"), [
    ("2019-01-01,2020-01-01", r"--split date 2019-01-01 00:00:00 is outside the data \(2016-07-01 00:00:00 to "
                              r"2018-06-26 19:00:00\)"),
    ("2017-06-01,2017-01-01", "the train end before the val end"),
    ("0.5,0.6", "fractions above 0 that sum to 1"),
    ("0.5,abc", "neither dates nor fractions"),
    ("2018-06-20,2018-06-26 10:00", r"the test split of ETTh1 leaves no window .* test 10 rows \(0 windows\)"),
])
def test_bad_splits_are_one_line(split, message, data_dir: Path) -> None:
    with pytest.raises(ForecastError, match=message):
        load_series(DataConfig("ETTh1", seq_len=96, horizon=24, split=split))


def test_fill_completes_a_users_file_and_aligns_a_long_panel(tmp_path: Path) -> None:
    import polars as pl

    dates = [f"2020-01-{d:02d}" for d in range(1, 31)]
    wide = pl.DataFrame({"date": dates, "a": [float(i) for i in range(30)], "b": [1.0] * 30})
    wide = wide.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("a")).alias("a"))
    wide.write_csv(tmp_path / "gap.csv")
    with pytest.raises(ForecastError, match="empty or NaN value at data row 6"):
        load_series(DataConfig(str(tmp_path / "gap.csv"), 4, 2))
    s = load_series(DataConfig(str(tmp_path / "gap.csv"), 4, 2, fill="interpolate"))
    assert s.raw[5, 0] == pytest.approx(5.0)
    long = pl.DataFrame({"unique_id": ["a"] * 30 + ["b"] * 29, "ds": dates + dates[:12] + dates[13:],
                         "y": [float(i) for i in range(30)] + [2.0] * 29})
    long.write_csv(tmp_path / "long.csv")
    with pytest.raises(ForecastError, match="series 'b' has 29 rows .* but the series together have 30 timestamps"):
        load_series(DataConfig(str(tmp_path / "long.csv"), 4, 2))
    s = load_series(DataConfig(str(tmp_path / "long.csv"), 4, 2, fill="ffill"))
    assert s.columns == ["a", "b"] and s.raw.shape == (30, 2) and s.raw[12, 1] == 2.0
    with pytest.raises(ForecastError, match="data.fill 'zero' is not ffill or interpolate"):
        DataConfig("x.csv", 4, 2, fill="zero")
