"""Split-conformal intervals: the order statistic, coverage on exchangeable data, the stored file and the levels
predict accepts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from forecast.conformal import (CRPS_LEVELS, calibrate, conformal_rank, half_widths, level_name, min_windows,
                               residuals)
from forecast.errors import ForecastError


def test_the_half_width_is_the_finite_sample_order_statistic() -> None:
    r = torch.tensor([[3.0], [1.0], [4.0], [1.5], [9.0], [2.0], [6.0], [5.0], [0.5]]).reshape(9, 1, 1)
    assert conformal_rank(9, 0.8) == 8 and conformal_rank(9, 0.5) == 5
    w = half_widths(r, (0.5, 0.8))
    assert w.shape == (2, 1, 1) and w[0, 0, 0] == 3.0 and w[1, 0, 0] == 6.0  # 5th and 8th smallest
    assert math.isinf(half_widths(r[:3], (0.9,))[0, 0, 0])  # rank 4 of 3: no finite interval has the guarantee


def test_too_few_validation_windows_leave_an_interval_unbounded_and_the_summary_says_how_many_it_needs() -> None:
    from forecast.commands.train import unbounded_intervals

    assert [min_windows(a) for a in (0.2, 0.5, 0.8, 0.9, 0.95)] == [1, 1, 4, 9, 19]
    for level in (0.8, 0.9, 0.95):  # the fewest windows with a finite half-width, and one fewer gives none
        n = min_windows(level)
        r = torch.arange(1.0, n + 1).reshape(n, 1, 1)
        assert math.isfinite(half_widths(r, (level,))[0, 0, 0]) and math.isinf(half_widths(r[1:], (level,))[0, 0, 0])
    m = {"test_width_80": 1.2, "test_width_90": math.inf, "test_crps": 0.4, "val_windows": 7.0}
    assert unbounded_intervals(m) == ("unbounded 90% interval: 7 validation windows, where split conformal needs 9 "
                                      "for 90%; give validation more rows (--split) or forecast fewer steps "
                                      "(--horizon).")
    m.update(test_width_80=math.inf, test_crps=math.nan, val_windows=2.0)
    assert unbounded_intervals(m).startswith("unbounded 80%, 90% intervals: 2 validation windows, where split "
                                             "conformal needs 4 for 80%, 9 for 90% (CRPS, read from the 20-80% "
                                             "intervals, is not a number);")
    assert unbounded_intervals({"test_crps": math.nan, "val_windows": 3.0}).startswith(
        "CRPS not a number: 3 validation windows, where split conformal needs 4 for 80%;")
    assert unbounded_intervals({"test_width_80": 1.0, "test_crps": 0.3, "val_windows": 99.0}) is None

    import polars as pl

    from forecast.commands.predict import _unbounded

    inf = float("inf")
    wide = pl.DataFrame({"OT": [1.0], "OT_lo80": [0.5], "OT_hi80": [1.5], "OT_lo90": [-inf], "OT_hi90": [inf]})
    assert _unbounded(wide) == ["the 90% interval is unbounded (-inf to inf): the model's validation split held fewer "
                                "than the 9 windows that calibrate it; retrain with more validation rows to bound it."]
    assert _unbounded(pl.DataFrame({"value": [1.0], "lo80": [-inf], "hi80": [inf]}))[0].startswith("the 80% interval")
    assert _unbounded(wide.drop("OT_lo90", "OT_hi90")) == [] and _unbounded(None) == []


def test_the_selection_gives_the_sorted_order_statistics_with_ties_and_every_level_at_once() -> None:
    gen = torch.Generator().manual_seed(3)
    r = torch.randint(0, 20, (257, 5, 3), generator=gen).float() / 4  # many ties
    levels = (0.9, 0.2, 0.8, 0.999, 0.8, 0.5)  # unsorted, a repeat, and one past the last rank (inf)
    ordered = torch.sort(r, dim=0).values
    want = [ordered[conformal_rank(257, lv) - 1] if conformal_rank(257, lv) <= 257 else torch.full((5, 3), math.inf)
            for lv in levels]
    got = half_widths(r, levels)
    assert got.dtype == np.float32 and got.shape == (6, 5, 3)
    np.testing.assert_array_equal(got, torch.stack(want).numpy())
    assert half_widths(r, ()).shape == (0, 5, 3)


def test_calibrate_is_one_pass_for_the_asked_levels_and_the_crps_levels() -> None:
    from forecast.data.windows import WindowDataset

    gen = torch.Generator().manual_seed(4)
    values = torch.randn(200, 3, generator=gen)
    windows = WindowDataset(values, None, 0, 200, 24, 8, 3)
    model = _Last()
    widths, crps = calibrate(model, windows, 16, lambda p: p, (0.8, 0.9))
    abs_res = residuals(model, windows, 64)  # 169 windows: two batches of 64 and one of 41, into [H·N, W] rows
    every = windows[list(range(len(windows)))]
    assert torch.equal(abs_res, (every["y"] - every["x"][:, -1:]).abs())  # the naive forecast's residuals, in order
    np.testing.assert_array_equal(widths, half_widths(abs_res, (0.8, 0.9)))
    np.testing.assert_array_equal(crps, half_widths(abs_res, CRPS_LEVELS))
    assert widths.shape == (2, 8, 3) and crps.shape == (4, 8, 3)


class _Last(torch.nn.Module):
    """Repeats the last lookback value over the horizon (the naive forecast), with one parameter for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        return x[:, -1:].expand(-1, 8, -1) + self.anchor


def test_coverage_on_exchangeable_data_is_the_nominal_level() -> None:
    """i.i.d. residuals: the test coverage is k/(n+1) in expectation; one draw lies within binomial noise."""
    gen = torch.Generator().manual_seed(0)
    n, m, H, N = 2000, 20000, 3, 2
    calib = torch.randn(n, H, N, generator=gen).abs()
    test = torch.randn(m, H, N, generator=gen).abs()
    for level in (0.8, 0.9):
        w = torch.from_numpy(half_widths(calib, (level,)))[0]
        covered = (test <= w).double().mean().item()
        expected = conformal_rank(n, level) / (n + 1)
        assert abs(covered - expected) < 4 * math.sqrt(level * (1 - level) / n), (level, covered)


def test_level_names() -> None:
    assert [level_name(v) for v in (0.8, 0.9, 0.975, 0.5)] == ["80", "90", "97.5", "50"]


def test_levels_predict_accepts() -> None:
    from forecast.inference.io import parse_levels

    assert parse_levels("80,90", (0.8, 0.9)) == (0.8, 0.9) and parse_levels(0.9, (0.8, 0.9)) == (0.9,)
    assert parse_levels(None, None) == () and parse_levels("80, 80", (0.8,)) == (0.8,)
    cases = {"95": "--level 95 is not one the model has; its calibrated interval levels: 80, 90.",
             "150": "--level 150 is outside (0, 100)", "high": "--level 'high' is not a number",
             "0": "--level 0 is outside (0, 100)"}
    for value, message in cases.items():
        with pytest.raises(ForecastError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_levels(value, (0.8, 0.9))
    with pytest.raises(ForecastError, match=r"interval levels: none \(trained with train.intervals: \[\]\)"):
        parse_levels("80", None)


def test_a_damaged_intervals_file_is_one_line(tmp_path) -> None:
    from forecast import artifact

    meta = artifact.model_meta("dlinear", 8, 4, ["a", "b"], np.zeros(2), np.ones(2), "h", 0)
    path = tmp_path / artifact.INTERVALS_FILE
    np.savez(path, levels=np.array([0.8]), widths=np.ones((1, 4, 2), np.float32))
    levels, widths = artifact.read_intervals(path, meta)
    assert levels == (0.8,) and widths.shape == (1, 4, 2)
    for bad in ({"levels": np.array([0.8]), "widths": np.ones((1, 5, 2))},
                {"levels": np.array([1.5]), "widths": np.ones((1, 4, 2))},
                {"levels": np.array([0.8]), "widths": -np.ones((1, 4, 2))}):
        np.savez(path, **bad)
        with pytest.raises(ForecastError, match="the model artifact is damaged"):
            artifact.read_intervals(path, meta)
    path.write_bytes(b"not a zip")
    with pytest.raises(ForecastError, match="could not be read"):
        artifact.read_intervals(path, meta)


def test_bad_interval_levels_in_the_config_are_one_line() -> None:
    from forecast.config import TrainConfig

    assert TrainConfig(intervals=[0.5, 0.95]).intervals == (0.5, 0.95) and TrainConfig(intervals=[]).intervals == ()
    for bad in ([0.9, 0.8], [0.8, 1.0], ["a"], 0.8):
        with pytest.raises(ForecastError, match="train.intervals must be increasing coverage levels"):
            TrainConfig(intervals=bad)


def test_crps_is_probts_quantile_loss_averaged_over_levels_and_windows() -> None:
    """By hand: per window, mean over q in 0.1..0.9 of 2·Σ|(y − ŷ_q)(1[y ≤ ŷ_q] − q)| / Σ|y|."""
    from forecast.conformal import CRPS_LEVELS, CRPS_QUANTILES, quantile_forecasts, window_crps

    gen = torch.Generator().manual_seed(1)
    B, H, N = 3, 4, 2
    pred, y = torch.randn(B, H, N, generator=gen, dtype=torch.float64), torch.randn(B, H, N, generator=gen,
                                                                                    dtype=torch.float64)
    widths = torch.from_numpy(half_widths(torch.randn(50, H, N, generator=gen).abs(), CRPS_LEVELS)).double()
    qf = quantile_forecasts(pred, widths)
    assert qf.shape == (9, B, H, N) and torch.equal(qf[4], pred)
    assert (qf[1:] >= qf[:-1]).all()  # no crossing: wider levels have wider half-widths
    assert torch.equal(qf[0], pred - widths[3]) and torch.equal(qf[8], pred + widths[3])  # the 80% interval's edges
    got = window_crps(qf, y)
    for b in range(B):
        yb = y[b].numpy()
        losses = []
        for i, q in enumerate(CRPS_QUANTILES):
            f = qf[i, b].numpy()
            losses.append(2 * np.abs((yb - f) * ((yb <= f).astype(float) - q)).sum() / np.abs(yb).sum())
        assert float(got[b]) == pytest.approx(np.mean(losses), rel=1e-12)
    # a perfect point forecast with zero-width intervals scores 0
    assert float(window_crps(quantile_forecasts(y, torch.zeros(4, H, N, dtype=torch.float64)), y).max()) == 0.0


def test_a_nine_level_quantile_models_crps_is_probts_of_its_own_quantiles() -> None:
    """By hand, in both scales: per window, the mean over q of 2·Σ|(y − ŷ_q)(1[y ≤ ŷ_q] − q)| / Σ|y|, from
    the model's own (asymmetric) quantiles picked out of its levels."""
    from forecast.conformal import CRPS_QUANTILES, model_crps_sums, probts_levels

    assert probts_levels((0.1, 0.5, 0.9)) is None and probts_levels(()) is None
    levels = (0.05, *CRPS_QUANTILES, 0.95)
    assert probts_levels(levels) == list(range(1, 10))
    gen = torch.Generator().manual_seed(2)
    B, H, N = 3, 4, 2
    out = torch.randn(B, H, N, len(levels), generator=gen).sort(dim=-1).values  # [B, H, N, 11]
    y = torch.randn(B, H, N, generator=gen)
    mean, std = torch.tensor([5.0, -2.0]), torch.tensor([3.0, 0.5])
    got = model_crps_sums(out[..., probts_levels(levels)], y, mean, std)
    for k, (scale, shift) in enumerate(((torch.ones(N), torch.zeros(N)), (std, mean))):
        want = 0.0
        for b in range(B):
            yb = (y[b].double() * scale + shift).numpy()
            losses = [2 * np.abs((yb - f) * ((yb <= f).astype(float) - q)).sum() / np.abs(yb).sum()
                      for q, f in ((q, (out[b, ..., i + 1].double() * scale + shift).numpy())
                                   for i, q in enumerate(CRPS_QUANTILES))]
            want += np.mean(losses)
        assert float(got[k]) == pytest.approx(want, rel=1e-12)


def test_crps_sums_equal_the_nine_quantile_forecasts_in_both_scales_and_with_per_window_widths() -> None:
    """The fused computation the test pass and --rolling use gives window_crps's numbers (to float64 rounding)."""
    from forecast.conformal import CRPS_LEVELS, crps_sums, quantile_forecasts, window_crps

    gen = torch.Generator().manual_seed(5)
    B, H, N = 64, 12, 3
    pred, y = torch.randn(B, H, N, generator=gen), torch.randn(B, H, N, generator=gen)
    mean, std = torch.tensor([10.0, -3.0, 0.5]), torch.tensor([2.0, 0.1, 7.0])
    shared = torch.from_numpy(half_widths(torch.randn(200, H, N, generator=gen).abs(), CRPS_LEVELS))  # [4, H, N]
    per_window = shared * (0.5 + torch.rand(B, 1, H, N, generator=gen))  # [B, 4, H, N], as the adaptive ones
    for widths in (shared, per_window):
        w = widths.double()
        q = torch.stack([quantile_forecasts(pred[b:b + 1].double(), w if w.dim() == 3 else w[b])[:, 0]
                         for b in range(B)], dim=1)  # [9, B, H, N]
        yd, m, s = y.double(), mean.double(), std.double()
        want = [window_crps(q, yd).sum(), window_crps(q * s + m, yd * s + m).sum()]
        got = crps_sums(pred, y, widths, mean, std)
        assert got.dtype == torch.float64 and got.shape == (2,)
        torch.testing.assert_close(got, torch.stack(want), rtol=1e-12, atol=0)


def _tracked(abs_err: np.ndarray, static: np.ndarray, levels: tuple[float, ...], rate: float = 0.05) -> np.ndarray:
    from forecast.conformal import online_widths

    return np.stack(list(online_widths(abs_err, static, levels, rate)))  # [W, K, h, N]


def test_adaptive_intervals_follow_a_shift_the_static_ones_miss() -> None:
    """Calibrated on N(0, 1) residuals, scored on residuals twice as wide: the split-conformal 80% interval covers
    about P(|z| < 0.64) = 48%, the tracked one the nominal 80% (within the delay's and the noise's share)."""
    gen = np.random.default_rng(0)
    W, h, N, levels = 4000, 4, 2, (0.8, 0.9)
    calib = torch.from_numpy(np.abs(gen.standard_normal((3000, h, N))))
    static = half_widths(calib, levels).astype(np.float64)
    test = np.abs(2 * gen.standard_normal((W, h, N)))
    widths = _tracked(test, static, levels)
    assert widths.shape == (W, *static.shape) and np.array_equal(widths[0], static)  # starts at the static ones
    for k, level in enumerate(levels):
        fixed = (test <= static[k]).mean()
        moving = (test <= widths[:, k]).mean()
        assert fixed < level - 0.25 and abs(moving - level) < 0.03, (level, fixed, moving)
    assert (widths[:, 1] >= widths[:, 0]).all()  # nested: the 90% interval is never narrower than the 80%
    # exchangeable residuals: the tracked intervals keep the nominal coverage too
    same = np.abs(gen.standard_normal((W, h, N)))
    assert abs((same <= _tracked(same, static, levels)[:, 0]).mean() - 0.8) < 0.03


def test_an_adaptive_interval_reads_only_the_actuals_observed_before_its_window() -> None:
    """Step j of window t is observed from window t + j + 1 on: changing every residual not yet observed at window
    t0 leaves the widths of windows 0..t0 as they were, and changes later ones."""
    gen = np.random.default_rng(1)
    W, h, N, t0 = 60, 5, 3, 30
    err = np.abs(gen.standard_normal((W, h, N)))
    static = np.ones((1, h, N))
    later = np.arange(W)[:, None] + np.arange(h)[None, :] + 1 > t0  # [W, h]: not observed by window t0
    changed = err.copy()
    changed[later] += 10.0
    a, b = _tracked(err, static, (0.8,)), _tracked(changed, static, (0.8,))
    assert np.array_equal(a[: t0 + 1], b[: t0 + 1]) and not np.array_equal(a[t0 + 1:], b[t0 + 1:])
    # unknown actuals (NaN: past the end of the input) never move a tracker: once the last known one has arrived
    # (step h - 1 of window t0 - 1, at window t0 + h - 1) the widths stay put
    nan = err.copy()
    nan[t0:] = np.nan
    got = _tracked(nan, static, (0.8,))
    assert (got[t0 + h - 1:] == got[t0 + h - 1]).all() and not (got[t0: t0 + h - 1] == got[t0 + h - 1]).all()


def test_residuals_of_kept_forecasts_equal_a_pass_and_a_short_or_long_set_is_refused() -> None:
    from forecast.conformal import forecasts_of
    from forecast.data.windows import WindowDataset

    values = torch.randn(120, 2, generator=torch.Generator().manual_seed(5))
    windows = WindowDataset(values, None, 0, 120, 24, 8, 2)  # 89 windows
    model = _Last()
    kept = list(forecasts_of(model, windows, 32))  # batches of 32, 32, 25, as a validation pass makes them
    assert model.training and [len(k) for k in kept] == [32, 32, 25]
    assert torch.equal(residuals(model, windows, 32, forecasts=kept), residuals(model, windows, 7))
    with pytest.raises(ValueError, match="forecasts for 64 of 89 windows"):
        residuals(model, windows, forecasts=kept[:2])
    with pytest.raises(ValueError, match="do not match"):
        residuals(model, windows, forecasts=[*kept, kept[-1]])


def test_best_weights_hold_the_best_epochs_validation_forecasts() -> None:
    """The forecasts kept are those of the epoch whose weights are restored (strict improvement), and a resumed
    run, whose best epoch's forecasts are gone, holds none."""
    from types import SimpleNamespace

    from forecast.train.callbacks import BestWeights

    best, module = BestWeights(), SimpleNamespace(model=torch.nn.Linear(2, 2))
    passes = []
    for epoch, loss in enumerate([3.0, 1.0, 1.0, 2.0]):
        module.val_forecasts = [torch.full((4, 2), float(epoch))]
        passes.append(module.val_forecasts)
        trainer = SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                                  callback_metrics={"val_loss": torch.tensor(loss)})
        best.on_validation_end(trainer, module)
    assert best.best_epoch == 1 and best.forecasts is passes[1]
    best.load_state_dict(best.state_dict())
    assert best.forecasts is None


@pytest.mark.parametrize("loss,keep", [("mse", True), ("quantile", True), ("mse", False)])
def test_a_run_calibrates_on_its_best_epochs_forecasts_as_a_pass_of_the_restored_weights_would(
        data_dir, tmp_path, monkeypatch, loss: str, keep: bool) -> None:  # noqa: ANN001
    """Calibration reads the best epoch's validation forecasts (no pass of its own) and gets the half-widths a
    pass of the restored weights gives, bit for bit; when the forecasts would be too big to keep, it makes the
    pass."""
    import forecast.pipeline.run as run_mod
    from forecast.pipeline import TrainOptions, train
    from forecast.resolve import resolve

    seen = []

    def checked(model, windows, batch_size, point, levels, forecasts=None):  # noqa: ANN001, ANN202
        seen.append(forecasts is not None)
        got = calibrate(model, windows, batch_size, point, levels, forecasts)
        fresh = calibrate(model, windows, batch_size, point, levels)
        for a, b in zip(got, fresh):
            np.testing.assert_array_equal(a, b)
        return got

    monkeypatch.setattr(run_mod, "calibrate", checked)
    if not keep:
        monkeypatch.setattr(run_mod, "KEEP_VAL_FORECASTS_BYTES", 0)
    monkeypatch.chdir(tmp_path)
    # a constant lr too high for the first epoch's weights to be beaten: the best epoch is not the last one
    cfg = resolve("dlinear", "ETTh1", {"train.epochs": 3, "train.limit_train_batches": 2, "data.seq_len": 96,
                                       "data.horizon": 24, "train.lr": 0.5, "train.lradj": "constant",
                                       "train.loss": loss})
    res = train(cfg, TrainOptions(tracking_uri=f"sqlite:///{tmp_path}/m.db", quiet=True, log_artifacts=False))
    assert seen == [keep] and res.best_epoch < res.epochs_run - 1 and "test_coverage_90" in res.metrics


def test_a_quantile_models_kept_validation_forecasts_are_its_medians_alone(data_dir) -> None:  # noqa: ANN001
    """Keeping a pass's forecasts holds [W, H, N] floats, not the [W, H, N, Q] outputs they were read from."""
    from forecast.pipeline.run import build
    from forecast.resolve import resolve

    cfg = resolve("dlinear", "ETTh1", {"data.seq_len": 48, "data.horizon": 12, "train.loss": "quantile"})
    dm, module = build(cfg, progress=False)
    module.keep_val_forecasts = True
    module.on_validation_epoch_start()
    batch = dm.dataset("val")[list(range(5))]
    with torch.no_grad():
        module.validation_step(batch, 0)
        full = module.model(batch["x"])
    (kept,) = module.val_forecasts
    assert kept.shape == (5, 12, 7) and kept.untyped_storage().nbytes() == kept.nbytes
    assert torch.equal(kept, full[..., cfg.train.model_quantiles.index(0.5)])
