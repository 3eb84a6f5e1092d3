"""What ``forecast tune`` is asked to do (:class:`TuneOptions`) and what it did (:class:`TuneResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forecast.pipeline import TrainResult


SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
DEFAULT_STORAGE = "optuna.db"
TOP_TRIALS = 5


@dataclass
class TuneOptions:
    """How to run a study. ``None`` for ``n_trials`` and ``timeout`` means no limit of that kind."""

    n_trials: int | None = 20  # trials to run in this invocation (a resumed study keeps its earlier ones)
    timeout: float | None = None  # seconds; no new trial starts after this
    study_name: str | None = None  # default: <model>-<dataset>-pl<H>
    storage: str | None = None  # an RDB URL or a sqlite file path; default sqlite:///optuna.db here
    sampler: str = "tpe"
    sampler_seed: int | None = None  # default train.seed; offset by the trials already in the study
    pruner: str = "median"
    pruner_startup: int = 5  # median: trials that complete before any pruning
    pruner_warmup: int = 0  # median: epochs of every trial that are never pruned
    n_jobs: int = 1  # trials in parallel threads of this process
    retrain_best: bool = False
    report: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None  # default: the dataset's name
    quiet: bool = False


@dataclass
class TuneResult:
    """What one invocation did, and where the study stands afterwards."""

    study_name: str
    storage: str  # the URL, password hidden
    parent_run_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str
    trials_run: list[int]  # trial numbers started by this invocation
    n_complete: int  # of this invocation's trials
    n_pruned: int
    n_failed: int
    n_total: int  # trials in the study, all invocations and workers
    n_complete_total: int  # complete trials in the study
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    top: list[dict[str, Any]]  # the best complete trials: number, value, params, epochs
    space: dict[str, dict[str, Any]]
    wall_seconds: float
    interrupted: bool = False
    first_error: str | None = None
    retrain: TrainResult | None = None
    report_artifacts: list[str] = field(default_factory=list)
