"""Split-conformal intervals: the order statistic, coverage on exchangeable data, the stored file and the levels
predict accepts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from forecast.conformal import conformal_rank, half_widths, level_name
from forecast.errors import ForecastError


def test_the_half_width_is_the_finite_sample_order_statistic() -> None:
    r = torch.tensor([[3.0], [1.0], [4.0], [1.5], [9.0], [2.0], [6.0], [5.0], [0.5]]).reshape(9, 1, 1)
    assert conformal_rank(9, 0.8) == 8 and conformal_rank(9, 0.5) == 5
    w = half_widths(r, (0.5, 0.8))
    assert w.shape == (2, 1, 1) and w[0, 0, 0] == 3.0 and w[1, 0, 0] == 6.0  # 5th and 8th smallest
    assert math.isinf(half_widths(r[:3], (0.9,))[0, 0, 0])  # rank 4 of 3: no finite interval has the guarantee


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
