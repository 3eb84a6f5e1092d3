"""Optuna's storage (an RDB URL, a sqlite file by default), the sampler and the pruner, and retrying what
workers that start together race on."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import optuna

from forecast.errors import ForecastError
from forecast.tracking import creation_lock, safe_url, sqlite_url
from forecast.tuning.options import DEFAULT_STORAGE, PRUNERS, SAMPLERS


def storage_url(storage: str | None) -> str:
    """An RDB URL: ``None`` → ``sqlite:///<cwd>/optuna.db``; a bare path → a sqlite URL; URLs unchanged."""
    if not storage:
        return sqlite_url(DEFAULT_STORAGE)
    return sqlite_url(storage) if "://" not in storage else storage


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (and create if needed) the RDB storage; anything that stops that is a one-line ForecastError."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # Several workers on one sqlite file wait for the write lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        # Workers that open a new sqlite file together would race on creating its tables: one at a time.
        with creation_lock(url, "--storage"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat is "experimental" in some Optuna versions
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=180)
    except ForecastError:
        raise
    except Exception as err:  # driver missing, server down, not a database, bad URL
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ForecastError(
            f"cannot open the Optuna storage '{safe_url(url)}': {first[:200]}. Pass --storage with a writable "
            "sqlite path (sqlite:///path/optuna.db) or a reachable database URL."
        ) from None


def n_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Trials already in the study (0 for a new one): offsets the sampler seed so a resume samples afresh."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: parallel workers
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ForecastError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}.")


def make_pruner(name: str, max_epochs: int, startup: int = 5, warmup: int = 0) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ForecastError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}.")


def retry(fn: Callable[[], Any], attempts: int = 8) -> Any:
    """``fn()``, tried again after a growing pause when it fails: workers that start together on a new MLflow
    store race to create its tables and experiments, and the losers succeed once the winner is done."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
