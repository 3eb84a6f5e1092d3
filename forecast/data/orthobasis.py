"""The OrthoTrans bases of a series (OLinear, Yue et al. 2025, arXiv 2505.08550), from its train split only.

Q is the T x T eigenbasis of the lag-correlation matrix of the training series (model_specs.md §4.1):
per variate, the covariance of its T lagged copies, each column divided by its diagonal entry, averaged
over variates; ``Q``'s rows are the eigenvectors by descending eigenvalue. A run needs two matrices,
``q_in`` with T = L (lookback) and ``q_out`` with T = H (horizon). They are computed from the train
split only (rows ``[0, border)``) and cached on disk; models receive them as ``ModelContext.extras`` and
apply them with :class:`forecast.layers.orthotrans.OrthoTrans`.

Entry points: :func:`data_extras` (the tensors a model asks for through the registry, for a loaded series) and
:func:`orthotrans_extras` (the two bases of raw values).
"""

from __future__ import annotations

import hashlib

import logging
import re
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from forecast.data.series import Series
from forecast.data.store import cache_dir as default_cache_dir
from forecast.errors import ForecastError
from forecast.process import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = "v1"  # bump when the recipe in compute_q changes, so stale cache files are not reused
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROVIDES = ("q_in", "q_out", "season")


def extra_shape(name: str, seq_len: int, horizon: int) -> tuple[int, ...]:
    """The shape of the data-derived tensor ``name``: ``q_in`` is [L, L], ``q_out`` [H, H], ``season`` a scalar."""
    return {"q_in": (seq_len, seq_len), "q_out": (horizon, horizon), "season": ()}[name]


def data_extras(names: tuple[str, ...], series: Series, seq_len: int, horizon: int) -> dict[str, torch.Tensor]:
    """The data-derived tensors ``names`` (what the model's registry entry asks for) from ``series``' train split.

    Every name the data layer knows is one of :data:`PROVIDES`; an unknown one is a programming error."""
    if not names:
        return {}
    unknown = sorted(set(names) - set(PROVIDES))
    if unknown:
        raise ValueError(f"no data-derived tensor named {unknown[0]!r}; known: {', '.join(PROVIDES)}")
    out: dict[str, torch.Tensor] = {}
    if "season" in names:  # seasonal_naive: the data's season, which must fit in the lookback
        if series.season > seq_len:
            raise ForecastError(f"a season of {series.name} is {series.season} steps, longer than seq_len {seq_len}; "
                                f"use --seq-len {series.season} or more, or --set model.season=N.")
        out["season"] = torch.tensor(series.season)
    if {"q_in", "q_out"} & set(names):
        key = series.sha256 if series.roles.is_default else hashlib.sha256(
            f"{series.sha256}:{','.join(series.columns[:series.n_inputs])}".encode()).hexdigest()
        bases = orthotrans_extras(series.raw[:, :series.n_inputs], series.borders["train"][1], seq_len, horizon,
                                  cache_dir=default_cache_dir() / "orthotrans", data_sha256=key)
        out.update({name: bases[name] for name in names if name in bases})
    return out


def _lag_covariance(a: np.ndarray, T: int, band: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``np.cov`` (ddof=1) of the T lagged copies of one series: ``a [n] -> [T, T]``.

    Lagged copy i is ``a[i : i + m]`` with ``m = n - T + 1`` (the rows of a Hankel matrix ``[T, m]``).
    Instead of forming it (O(T^2 m)), the cross products ``S[i, i+l] = sum_{t<m} a[i+t] a[i+l+t]`` come
    from one FFT correlation for i = 0 (O(n log n)) plus running edge corrections along each diagonal
    (O(T^2)); the result agrees with ``np.cov`` to ~1e-14 relative.
    ``band`` holds the index pairs ``(i, l)`` with ``i + l < T``.
    """
    n = len(a)
    m = n - T + 1
    a = a - a.mean()  # covariance is shift-invariant; centering avoids cancellation
    # r[l] = sum_{t<m} a[t] a[t+l] = S[0, l], by FFT; P >= n means t + l <= n - 1 never wraps around.
    P = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(a, P)  # [P // 2 + 1]
    r = np.fft.irfft(np.conj(np.fft.rfft(a[:m], P)) * spec, P)[:T]  # [T]
    pad = np.concatenate([a, np.zeros(T)])  # [n + T], so the windows below stay in range
    head = sliding_window_view(pad[: 2 * T - 1], T)  # [T, T], head[s, l] = a[s+l]
    tail = sliding_window_view(pad[m : m + 2 * T - 1], T)  # [T, T], tail[s, l] = a[m+s+l]
    # S[i+1, i+1+l] = S[i, i+l] + a[i+m] a[i+m+l] - a[i] a[i+l]
    step = pad[m : m + T, None] * tail - pad[:T, None] * head  # [T, T], indexed [s, l]
    diag = np.empty((T, T))  # diag[i, l] = S[i, i+l] (valid where i + l < T)
    diag[0] = r
    np.cumsum(step[:-1], axis=0, out=diag[1:])
    diag[1:] += r
    i, lag = band
    S = np.empty((T, T))
    S[i, i + lag] = diag[i, lag]
    S[i + lag, i] = diag[i, lag]
    cs = np.concatenate([[0.0], np.cumsum(a)])  # [n + 1]
    mu = (cs[m : m + T] - cs[:T]) / m  # [T], mean of lagged copy i
    return (S - m * np.outer(mu, mu)) / (m - 1)


def compute_q(train_values: np.ndarray, T: int, min_diag: float = 1e-4) -> np.ndarray:
    """OrthoTrans basis ``Q [T, T]`` (orthogonal; rows = eigenvectors, descending eigenvalue) (§4.1).

    ``train_values [rows, N]``: the train split only, raw (unscaled) values as in the official recipe;
    standardized values give the same Q except for which variates the ``min_diag`` rule skips.
    A variate is skipped when any diagonal entry of its lag covariance is below ``min_diag``.
    """
    a = np.asarray(train_values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"compute_q expects train values [rows, N], got shape {list(a.shape)}")
    if T < 1:
        raise ValueError(f"compute_q needs T >= 1, got T={T}")
    rows, n_vars = a.shape
    if rows < T + 1:
        raise ValueError(
            f"compute_q(T={T}) needs at least T + 1 = {T + 1} train rows (two windows of length T), got {rows}"
        )
    if not np.isfinite(a).all():
        raise ValueError("compute_q: the train values contain NaN or inf; fill or drop them first")
    total = np.zeros((T, T))
    kept = 0
    band = np.nonzero(np.add.outer(np.arange(T), np.arange(T)) < T)  # (i, l) with i + l < T
    for j in range(n_vars):
        C = _lag_covariance(a[:, j], T, band)  # [T, T]
        var = np.diag(C)  # [T]
        if (var < min_diag).any():
            continue
        total += C / var[None, :]  # column k divided by C[k, k] (the official rule, not sqrt(C_ii C_kk))
        kept += 1
    if kept == 0:
        raise ValueError(
            f"compute_q(T={T}): every one of the {n_vars} variates was skipped because a lagged variance "
            f"is below min_diag={min_diag} (constant or near-constant train series?)"
        )
    sigma = total / kept  # [T, T]; eigh reads the lower triangle, as numpy does in the recipe
    _, vecs = np.linalg.eigh(sigma)  # ascending eigenvalues, eigenvectors in columns
    # rows = eigenvectors, descending eigenvalue; a copy, not ascontiguousarray: numpy calls a [1, 1] view with a
    # negative stride contiguous and returns it as it is, which torch cannot take (T = 1, e.g. H = 1)
    return vecs[:, ::-1].T.copy()


def train_slice(values: np.ndarray, train_rows: int) -> np.ndarray:
    """The train split of a series ``[n, N]``: rows ``[0, train_rows)``, the only rows Q may see."""
    if not 0 < train_rows <= len(values):
        raise ValueError(f"train_rows must be in [1, {len(values)}], got {train_rows}")
    return values[:train_rows]


def q_cache_key(data_sha256: str, train_rows: int, T: int) -> str:
    """Cache key for one Q: the dataset file's sha256, the train split ``[0, train_rows)`` and T."""
    return f"orthoq-{CACHE_VERSION}-{data_sha256[:16]}-train{train_rows}-T{T}"


def load_or_compute_q(train_values: np.ndarray, T: int, cache_dir: Path, key: str) -> tuple[np.ndarray, bool]:
    """``(Q [T, T], was_cached)``: Q from ``cache_dir/<key>.npy``, else :func:`compute_q` and save it atomically.

    ``key`` must identify the data, the train split and T (see :func:`q_cache_key`). A cached file of
    the wrong shape or that cannot be read is recomputed and overwritten.
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"cache key must match {_KEY_RE.pattern} (a plain file name), got {key!r}")
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.npy"
    if path.exists():
        try:
            q = np.load(path, allow_pickle=False)
            if q.shape == (T, T) and np.isfinite(q).all():
                return q, True
            log.warning("OrthoTrans cache %s has shape %s, expected (%d, %d); recomputing", path, q.shape, T, T)
        except (OSError, ValueError) as err:
            log.warning("OrthoTrans cache %s is unreadable (%s); recomputing", path, err)
    q = compute_q(train_values, T)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # np.save on a name would append .npy
        np.save(fh, q, allow_pickle=False)
    return q, False


def orthotrans_extras(
    values: np.ndarray,
    train_rows: int,
    seq_len: int,
    horizon: int,
    cache_dir: Path | None = None,
    data_sha256: str | None = None,
) -> dict[str, torch.Tensor]:
    """``{"q_in": [L, L], "q_out": [H, H]}`` (float32) for ``ModelContext.extras``, from train rows only.

    ``values [n, N]`` is the whole series (raw values, the date column dropped); only rows
    ``[0, train_rows)`` are used. With ``cache_dir`` and ``data_sha256`` both given, each Q is cached.
    """
    train = train_slice(np.asarray(values), train_rows)
    out: dict[int, np.ndarray] = {}
    for T in dict.fromkeys((seq_len, horizon)):  # one computation when L == H
        if cache_dir is not None and data_sha256:
            out[T], _ = load_or_compute_q(train, T, Path(cache_dir), q_cache_key(data_sha256, train_rows, T))
        else:
            out[T] = compute_q(train, T)
    return {
        "q_in": torch.as_tensor(out[seq_len], dtype=torch.float32),
        "q_out": torch.as_tensor(out[horizon], dtype=torch.float32),
    }
