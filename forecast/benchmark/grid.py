"""The grid: what ``forecast benchmark`` was asked, every cell planned and resolved up front, and each cell's
identity (the config hash) for resuming."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecast.config import LOCATION_KEYS, DataConfig, RunConfig, digest
from forecast.data.catalogue import CATALOGUE, default_horizon, is_file_dataset, lookup
from forecast.errors import ForecastError
from forecast.models import BASELINES, get_spec, model_names
from forecast.resolve import resolve


HASH_EXCLUDE = [key.split(".") for key in (*LOCATION_KEYS, "train.published_drop_last")]  # what only adds metrics
# Keys added after cells were recorded, with their defaults: left out while at the default, so the earlier cells
# keep their hashes.
HASH_DEFAULT_OMITTED = {("data", "mark_freq"): None, ("data", "split"): None, ("data", "fill"): None,
                        ("train", "drop_last"): False, ("train", "shuffle"): "seed",
                        ("train", "intervals"): (0.8, 0.9), ("train", "quantiles"): (0.1, 0.5, 0.9),
                        ("data", "features"): "M", ("data", "target"): (), ("data", "past_covariates"): (),
                        ("data", "future_covariates"): ()}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class BenchmarkOptions:
    """What ``forecast benchmark`` was asked: the grid, its name, overrides for every cell and where runs go."""

    models: list[str]
    datasets: list[str]
    horizons: list[int] | None = None  # None: each dataset's default H (96; ILI 24, its papers' first)
    seeds: list[int] | None = None  # None: the seed in configs/ (train.seed, 2021 by default)
    name: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    tracking_uri: str | None = None
    experiment: str | None = None  # default: benchmark-<name>
    quiet: bool = False
    markdown: Path | None = None  # also write the result table here, with the command and wall time
    collect: bool = False  # train nothing: the table of the cells finished so far; the others stay pending
    baselines: bool = False  # add naive and seasonal_naive (once per dataset and horizon: they have no seed)


@dataclass
class Cell:
    """One (model, dataset, horizon, seed) of the grid, its resolved config and, once known, its outcome."""

    model: str
    dataset: str
    horizon: int
    seed: int
    cfg: RunConfig
    config_hash: str
    status: str = "pending"  # pending | skipped (finished earlier) | done | failed
    run_id: str | None = None
    experiment_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    n_params: int | None = None
    seconds: float = 0.0  # wall time of this cell in this invocation
    error: str | None = None
    saved_epochs: int | None = None  # a pending cell with a resumable checkpoint: the epochs it holds

    @property
    def label(self) -> str:
        return f"{self.model} {self.dataset} H={self.horizon} seed {self.seed}"

    @property
    def pending_label(self) -> str:
        """The label of a cell not run yet, with how far an interrupted earlier run of it got."""
        return self.label + (f" (checkpoint after epoch {self.saved_epochs})" if self.saved_epochs else "")


def parse_list(text: str, what: str, as_int: bool = False) -> list[Any]:
    """``"96,192"`` -> ``[96, 192]``; empty items are dropped, duplicates removed (order kept)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ForecastError(f"--{what} needs at least one value, e.g. --{what} {'96,192' if as_int else 'x,y'}.")
    if as_int:
        try:
            items = [int(t) for t in items]
        except ValueError:
            raise ForecastError(f"--{what} takes integers separated by commas, got '{text}'.") from None
        if any(v < 1 for v in items) and what == "horizons":
            raise ForecastError(f"--horizons must be positive integers, got '{text}'.")
    return list(dict.fromkeys(items))


def config_hash(cfg: RunConfig) -> str:
    """The cell's identity for resuming: see the module docstring for what it covers."""
    doc = cfg.to_dict()
    for section, key in HASH_EXCLUDE:
        doc[section].pop(key, None)
    for (section, key), default in HASH_DEFAULT_OMITTED.items():
        if doc[section].get(key, default) == default:
            doc[section].pop(key, None)
    return digest(doc)


def _all(names: list[str]) -> bool:
    return [n.lower() for n in names] == ["all"]


def _check_dataset(name: str) -> str:
    """A benchmark name (canonical spelling) or an existing file path; otherwise a ForecastError."""
    if is_file_dataset(name) and Path(name).exists():
        return name
    return lookup(name).name


MODEL_LOSS = ("train.loss", "train.loss_alpha", "train.quantiles")  # what a grid's --set gives its models only


def plan(opts: BenchmarkOptions) -> list[Cell]:
    """Validate every name and override up front and resolve every cell's config (nothing is trained)."""
    if not NAME_RE.match(opts.name):
        raise ForecastError(f"--name '{opts.name}' must be letters, digits, '.', '_' or '-' (at most 100).")
    # "all": every trained model (the baselines join with --baselines), every benchmark of the catalogue
    names = [m for m in model_names() if m not in BASELINES] if _all(opts.models) else opts.models
    models = list(dict.fromkeys(get_spec(m).name for m in names))
    datasets = list(dict.fromkeys(_check_dataset(d) for d in (CATALOGUE if _all(opts.datasets) else opts.datasets)))
    overrides = dict(opts.overrides)
    for fixed in ("data.horizon", "train.seed", "data.dataset"):
        if fixed in overrides:
            raise ForecastError(f"--set {fixed} is set by the grid; use --horizons/--seeds/--datasets instead.")
    cells: list[Cell] = []
    for dataset in datasets:
        for horizon in opts.horizons or [default_horizon(dataset) or DataConfig.horizon]:
            for model in models:
                for seed in (opts.seeds or [None]):
                    extra = {"data.horizon": horizon, **({"train.seed": seed} if seed is not None else {})}
                    cfg = resolve(model, dataset, {**overrides, **extra})
                    cells.append(Cell(model, dataset, horizon, cfg.train.seed, cfg, config_hash(cfg)))
            for model in BASELINES if opts.baselines else ():
                if model in models:
                    continue
                # data and train keys apply to every cell; a model key belongs to the models it names, and the
                # loss to the trained models: a baseline stays the point forecast with its empirical (conformal)
                # residual quantiles that a quantile-trained grid is compared with, not a baseline with a trained head
                shared = {k: v for k, v in overrides.items() if not k.startswith("model.") and k not in MODEL_LOSS}
                cfg = resolve(model, dataset, {**shared, "data.horizon": horizon})
                cells.append(Cell(model, dataset, horizon, cfg.train.seed, cfg, config_hash(cfg)))
    if cells:  # --precision is the grid's: one line, before any cell (imported here: the dashboard reads this module)
        from forecast.train.trainer import check_precision

        check_precision(cells[0].cfg.train)
    return cells
