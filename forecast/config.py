"""Typed run configuration: frozen dataclasses, each validated once when it is built.

This module is the bottom of the package (it imports nothing of forecast but its errors): the data layer reads
:class:`DataConfig`, training reads :class:`TrainConfig`. Resolving a whole :class:`RunConfig` from
``configs/*.yaml``, a user's YAML and the CLI needs the model registry, so it lives a layer up, in
:mod:`forecast.resolve`. Keys are ``section.key`` with section one of ``data``, ``model``, ``train``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forecast.errors import ForecastError, check_values, unknown_key

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SECTIONS = ("data", "model", "train")
# The named flags `forecast train` and `forecast tune` share and the keys they set: cli.py maps them to overrides,
# and the commands `forecast tune` prints to retrain the best are written back with them.
FLAGS = {"data.horizon": "--horizon", "data.seq_len": "--seq-len", "train.epochs": "--epochs",
         "train.batch_size": "--batch-size", "train.lr": "--lr", "train.seed": "--seed", "train.devices": "--devices",
         "train.precision": "--precision", "train.accelerator": "--accelerator", "data.data_dir": "--data-dir",
         "data.split": "--split", "data.fill": "--fill", "data.features": "--features", "data.target": "--target",
         "data.past_covariates": "--past-covariates", "data.future_covariates": "--future-covariates"}
TRAIN_FLAGS = {"train.num_nodes": "--num-nodes", "train.strategy": "--strategy", "train.compile": "--compile"}
# Keys that say where the data is read from and how, never what the numbers are: no part of a config's identity.
LOCATION_KEYS = ("data.data_dir", "data.num_workers")
# TSLib / neuralforecast spellings users type, and ours.
SYNONYMS = {"learning_rate": "lr", "pred_len": "horizon", "train_epochs": "epochs", "h": "horizon",
            "input_size": "seq_len", "max_epochs": "epochs", "random_seed": "seed"}
LRADJ = ("type1", "cosine", "constant", "hold_decay")
LOSSES = ("mse", "mae", "weighted_l1", "quantile")
STRATEGIES = ("auto", "ddp")
SHUFFLES = ("seed", "reference")
FEATURES = ("M", "S", "MS")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16")  # Lightning's names (lightning.fabric.connector._PRECISION_INPUT_STR)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ETTh1"  # a benchmark name or a path to a wide CSV/parquet (date + numeric columns)
    seq_len: int = 96  # L, lookback
    horizon: int = 96  # H, the forecast length (TSLib calls it pred_len)
    data_dir: str | None = None  # where to look first; else $FORECAST_DATA_DIR, then the cache
    time_features: bool = True  # timeF marks for the models that use them
    # The step whose calendar features make the marks; None: the data's own. The thuml-family configs set "h":
    # their official run.py defaults to --freq h and no script overrides it, so Weather (10 min) and ETTm
    # (15 min) get the 4 hourly features there, not 5 with the minute.
    mark_freq: str | None = None
    num_workers: int = field(default=0, metadata={"min": 0})
    # Where train and val end. None: the dataset's rule (the papers' borders for a benchmark, 70/10/20 for a file).
    # "0.6,0.2" or "0.6,0.2,0.2": fractions of the rows (train, val, and test the rest); "2018-01-01,2018-03-01": the
    # first val row and the first test row are the first ones at or after those dates.
    split: str | None = None
    # Empty cells of a user's file (and series of a long panel on different timestamps, aligned first): None (an
    # error), "ffill" or "interpolate", as forecast predict --fill.
    fill: str | None = None
    # What is forecast from what (forecast.data.roles): M, every column from every column (the papers'); S, each
    # target alone; MS, targets from covariates too. None: M, or MS when a target or a covariate is named. target:
    # default the last column (OT). Past covariates are observed up to the origin only; future covariates over the
    # horizon too ("calendar": the time features).
    features: str | None = None
    target: tuple = field(default=(), metadata={"checked_by_post_init": True})
    past_covariates: tuple = field(default=(), metadata={"checked_by_post_init": True})
    future_covariates: tuple = field(default=(), metadata={"checked_by_post_init": True})

    def __post_init__(self) -> None:
        for key in ("target", "past_covariates", "future_covariates"):
            object.__setattr__(self, key, column_list(getattr(self, key), f"data.{key}"))
        features = self.features or ("MS" if self.target or self.past_covariates or self.future_covariates else "M")
        if not isinstance(features, str) or features.upper() not in FEATURES:
            raise ForecastError(f"data.features must be one of {', '.join(FEATURES)} (M: all columns, S: each target "
                                f"alone, MS: targets from covariates), got {features!r}.")
        object.__setattr__(self, "features", features.upper())
        for key in ("seq_len", "horizon"):
            if getattr(self, key) < 1:
                raise ForecastError(f"data.{key} must be a positive integer, got {getattr(self, key)}.")
        if self.split is not None:
            parse_split(self.split)
        if self.fill not in (None, "ffill", "interpolate"):
            raise ForecastError(f"data.fill '{self.fill}' is not ffill or interpolate (or unset: empty cells are "
                                "errors).")
        if self.mark_freq is not None:
            import pandas as pd

            try:
                pd.tseries.frequencies.to_offset(str(self.mark_freq))
            except ValueError:
                raise ForecastError(f"data.mark_freq '{self.mark_freq}' is not a pandas frequency; use e.g. h, "
                                    "10min, D, or leave it unset for the data's own step.") from None

    @property
    def setting(self) -> str:
        """``""`` for the papers' M; else ``S OT``, ``MS OT + covariates``: beside the dataset in tables."""
        covariates = bool(self.past_covariates or self.future_covariates)
        return "" if self.features == "M" and not covariates else \
            f"{self.features} {','.join(self.target) or 'last column'}" + (" + covariates" if covariates else "")


def column_list(value: Any, name: str) -> tuple[str, ...]:
    """Column names from ``"A,B"``, a list or nothing; each named once."""
    items = () if value is None or value == "" else value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ForecastError(f"{name} must be column names like OT or HUFL,HULL, got {value!r}.")
    names = tuple(v.strip() for v in items)
    if len(set(names)) < len(names):
        raise ForecastError(f"{name} names column '{next(c for c in names if names.count(c) > 1)}' twice; name each "
                            "column once.")
    return names


def parse_split(text: Any) -> tuple[str, tuple]:
    """``("ratio", (train, val, test))`` or ``("date", (val_start, test_start))`` of a ``data.split`` value."""
    parts = [p.strip() for p in str(text).split(",")]
    hint = "give two dates (train end, val end) like 2018-01-01,2018-03-01, or fractions like 0.7,0.1"
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = None
    if numbers is not None:
        if len(numbers) == 2:
            numbers.append(1.0 - sum(numbers))
        if len(numbers) != 3 or min(numbers) <= 0 or abs(sum(numbers) - 1.0) > 1e-6:
            raise ForecastError(f"data.split '{text}' is not train,val[,test] fractions above 0 that sum to 1; {hint}.")
        return "ratio", tuple(numbers)
    import numpy as np

    try:
        dates = tuple(np.datetime64(p, "ns") for p in parts)
    except ValueError:
        raise ForecastError(f"data.split '{text}' is neither dates nor fractions; {hint}.") from None
    if len(dates) != 2 or not dates[0] < dates[1]:
        raise ForecastError(f"data.split '{text}' needs two dates, the train end before the val end; {hint}.")
    return "date", dates


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 256  # val/test batches; never drop_last, so it does not change metrics
    # Drop the last partial train batch, as the reference repos' train loaders do (cure-lab, TSLib, thuml). Off:
    # every train window is used, and a last batch of a few windows takes a full Adam step. Never val or test.
    drop_last: bool = False
    # Train batch order. seed: a generator seeded with train.seed. reference: the order torch's DataLoader draws
    # in the reference repos' epoch loop (LTSF-Linear, Time-Series-Library), continuing the RNG stream the
    # model's init leaves; for a model built as the reference builds it, the same seed gives the same batches.
    shuffle: str = "seed"
    lr: float = 1e-4
    covariate_lr: float = 1e-5  # the Linear family's CovariateMap's own lr, chosen on validation (covariate_lr.md)
    lradj: str = "type1"  # type1: lr halves every epoch | cosine | constant | hold_decay
    lr_hold_epochs: int = field(default=3, metadata={"min": 0})  # hold_decay: this many epochs, then *lr_decay
    lr_decay: float = 0.9
    patience: int = field(default=3, metadata={"min": 0})  # early stopping on val loss
    loss: str = "mse"  # mse | mae | weighted_l1 (|err| * (t+1)^-loss_alpha, OLinear) | quantile (pinball)
    loss_alpha: float = 0.5
    seed: int = 2021
    partial_variates: int = field(default=0, metadata={"min": 0})  # >0: each batch on a random subset this big
    accelerator: str = "auto"  # auto uses one GPU when present, else the CPU
    devices: int = field(default=1, metadata={"checked_by_post_init": True})  # per node; never "all"
    num_nodes: int = field(default=1, metadata={"checked_by_post_init": True})
    strategy: str = "auto"  # auto: one process unless devices x num_nodes > 1, then DDP | ddp
    precision: str = "32-true"  # Lightning's names, e.g. bf16-mixed
    compile: bool = False  # torch.compile the network's forward
    limit_train_batches: float = 1.0  # <=1.0: a fraction of batches; >1: that many batches (smoke runs)
    limit_val_batches: float = 1.0  # tuning smoke runs only; evaluation always sees every test window
    gradient_clip: float = field(default=0.0, metadata={"min": 0})  # 0: off
    # Split-conformal prediction intervals at these coverage levels, calibrated on the validation residuals of the
    # trained model (per horizon step and variate) and kept with it; () turns them off.
    intervals: tuple = field(default=(0.8, 0.9), metadata={"checked_by_post_init": True})
    # loss=quantile: the levels the model forecasts (its point forecast is the 0.5 one), trained with the pinball loss
    quantiles: tuple = field(default=(0.1, 0.5, 0.9), metadata={"checked_by_post_init": True})
    # The official test loader dropped its last partial batch of batch_size windows (LTSF-Linear until 2023-03): also
    # report test_mse_published etc. over that subset, never instead of every window. Not part of a cell's identity.
    published_drop_last: bool = False

    def __post_init__(self) -> None:
        qs = self.quantiles
        if not isinstance(qs, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                    or not 0 < v < 1 for v in qs) or list(qs) != sorted(set(qs)) \
                or 0.5 not in qs or len(qs) < 2:
            raise ForecastError(f"train.quantiles must be increasing levels in (0, 1) that include 0.5 (the point "
                                f"forecast) and another, like [0.1, 0.5, 0.9]; got {qs!r}.")
        object.__setattr__(self, "quantiles", tuple(float(v) for v in qs))
        levels = self.intervals
        if not isinstance(levels, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1 for v in levels) or \
                list(levels) != sorted(set(levels)):
            raise ForecastError(f"train.intervals must be increasing coverage levels in (0, 1) like [0.8, 0.9] (or [] "
                                f"for none), got {levels!r}.")
        object.__setattr__(self, "intervals", tuple(float(v) for v in levels))
        if self.lradj not in LRADJ:
            raise ForecastError(f"train.lradj must be one of {', '.join(LRADJ)}, got '{self.lradj}'.")
        if self.loss not in LOSSES:
            raise ForecastError(f"train.loss must be one of {', '.join(LOSSES)}, got '{self.loss}'.")
        if min(self.epochs, self.batch_size, self.eval_batch_size) < 1 or \
                not min(self.limit_train_batches, self.limit_val_batches) > 0:  # else no epoch, or no val_loss
            raise ForecastError("train.epochs, train.batch_size and train.eval_batch_size must be >= 1, and "
                                "train.limit_train_batches and train.limit_val_batches > 0.")
        if not self.lr > 0 or not self.covariate_lr > 0:
            raise ForecastError(f"train.lr and train.covariate_lr must be > 0, got {self.lr}, {self.covariate_lr}.")
        for key in ("devices", "num_nodes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ForecastError(f"train.{key} must be a positive integer (e.g. --{key.replace('_', '-')} 2), "
                                    f"got {value!r}; all devices are never taken by default.")
        if self.shuffle not in SHUFFLES:
            raise ForecastError(f"train.shuffle must be one of {', '.join(SHUFFLES)}, got '{self.shuffle}'.")
        if self.strategy not in STRATEGIES:
            raise ForecastError(f"train.strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'.")
        if self.precision not in PRECISIONS:
            raise ForecastError(f"train.precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'.")

    @property
    def model_quantiles(self) -> tuple[float, ...]:
        """The levels the model forecasts: ``quantiles`` when trained with the pinball loss, else none."""
        return self.quantiles if self.loss == "quantile" else ()

    @property
    def world_size(self) -> int:
        """Processes that train together: devices per node x nodes."""
        return self.devices * self.num_nodes


@dataclass(frozen=True)
class RunConfig:
    model_name: str
    data: DataConfig
    model: Any  # the model's own config dataclass (see forecast.models.registry)
    train: TrainConfig
    search_space: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """``{"data.seq_len": 96, "model.individual": False, ...}`` for MLflow params and YAML."""
        out: dict[str, Any] = {"model.name": self.model_name}
        for section in ("data", "model", "train"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }


def parse_value(text: str) -> Any:
    """A ``--set`` value, parsed as YAML so ``true``, ``1e-3`` and ``[1, 2]`` get their types."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf") else value
        except ValueError:
            return value
    return value


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ForecastError(f"--set expects key=value (e.g. --set model.individual=true), got '{pair}'.")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    """``cls(**values)`` for one config section; an unknown key, a truthy string for a switch or a bad value is one
    ForecastError."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in allowed:
            raise unknown_key("config key", key, allowed, f"Valid {section} keys: {', '.join(sorted(allowed))}.",
                              prefix=f"{section}.", synonyms=SYNONYMS)
    check_values(cls, values, section)
    try:
        return cls(**values)
    except TypeError as err:
        raise ForecastError(f"invalid {section} config: {err}") from None


def digest(doc: Any) -> str:
    """A config's identity: the sha256 of its canonical JSON (sorted keys, no spaces), first 16 hex digits. The
    benchmark's cell hash and the dashboard's config groups are both this."""
    blob = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
