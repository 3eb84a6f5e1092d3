"""Hyperparameter search with Optuna: pruned, resumable, shareable studies, recorded in MLflow.

Every trial trains through :func:`forecast.pipeline.train`, the same path as ``forecast train``, with
``evaluate_test=False``: the test split is never loaded while tuning. The objective is the best validation
loss; it is reported to the pruner after every epoch by optuna-integration's Lightning pruning callback.

Studies live in an Optuna RDB storage (``sqlite:///optuna.db`` in the working directory by default), so
running the same command again resumes a study, and several processes (or machines, on one RDB server)
share it. MLflow gets one parent run per invocation and one nested run per trial, tagged with the trial's
state (``COMPLETE``, ``PRUNED`` or ``FAILED``). ``--retrain-best`` trains the best configuration once more,
evaluates it on the test split and records it as a separate run tagged as the study's result.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from forecast.config import DataConfig, RunConfig, TrainConfig, resolve
from forecast.errors import ForecastError

if TYPE_CHECKING:  # heavy imports stay inside functions so `forecast --help` is fast
    import optuna
    from optuna.trial import FrozenTrial

    from forecast.data.series import Series
    from forecast.pipeline import TrainResult

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
SPACE_TYPES = ("float", "int", "categorical")
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


# -- storage --------------------------------------------------------------------------------------------------------
def storage_url(storage: str | None) -> str:
    """An RDB URL: ``None`` → ``sqlite:///<cwd>/optuna.db``; a bare path → a sqlite URL; URLs unchanged."""
    if not storage:
        return f"sqlite:///{Path.cwd() / DEFAULT_STORAGE}"
    if "://" not in storage:
        return f"sqlite:///{Path(storage).expanduser().resolve()}"
    return storage


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for tags, tables and printed commands)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: it will fail to open anyway
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Open (and create if needed) the RDB storage; anything that stops that is a one-line ForecastError."""
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # Several workers on one sqlite file wait for the write lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat is "experimental" in some Optuna versions
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=60,
                                                  grace_period=180)
        except Exception as err:  # driver missing, server down, directory missing, not a database, bad URL
            text = str(err)
            # Workers that create a new database at the same moment race on its tables: the loser retries.
            if attempt < 4 and any(s in text for s in ("UNIQUE constraint", "already exists", "locked")):
                time.sleep(0.5 * (attempt + 1))
                continue
            first = (text.strip().splitlines() or [type(err).__name__])[0]
            raise ForecastError(
                f"cannot open the Optuna storage '{safe_url(url)}': {first[:200]}. Pass --storage with a writable "
                "sqlite path (sqlite:///path/optuna.db) or a reachable database URL."
            ) from None
    raise AssertionError("unreachable")


# -- search spaces --------------------------------------------------------------------------------------------------
def _section_fields(model_name: str) -> dict[str, dict[str, Any]]:
    from forecast.models import get_spec

    spec = get_spec(model_name)
    return {
        "data": {f.name: f for f in dataclasses.fields(DataConfig)},
        "model": {f.name: f for f in dataclasses.fields(spec.config_cls)},
        "train": {f.name: f for f in dataclasses.fields(TrainConfig)},
    }


def _number(value: Any, where: str, integer: bool) -> float | int:
    """A bound from YAML as a number; ``1e-4`` (a string to YAML 1.1) is accepted too."""
    if isinstance(value, bool):
        raise ForecastError(f"{where} must be a number, got {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ForecastError(f"{where} must be a number, got '{value}'.") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ForecastError(f"{where} must be a finite number, got {value!r}.")
    if integer:
        if float(value) != int(value):
            raise ForecastError(f"{where} must be an integer, got {value!r}.")
        return int(value)
    return float(value)


def normalize_space(space: dict[str, Any], model_name: str) -> dict[str, dict[str, Any]]:
    """Check a ``search_space`` mapping and return it in one canonical form.

    Every key must be ``section.field`` of the run config (``train.lr``, ``model.d_model``, ...), and every
    spec one of::

        {type: float, low: 1.0e-4, high: 5.0e-2, log: true}      # optional step (not with log)
        {type: int, low: 1, high: 4}                              # optional step, log
        {type: categorical, choices: [16, 32, 64]}
    """
    from forecast.models import get_spec

    if not isinstance(space, dict):
        raise ForecastError("search_space must be a mapping of 'section.key' to {type: ..., ...}.")
    fields = _section_fields(model_name)
    preset = get_spec(model_name).preset
    out: dict[str, dict[str, Any]] = {}
    for key, spec in space.items():
        section, _, name = str(key).partition(".")
        if section not in fields or not name:
            raise ForecastError(
                f"unknown search-space parameter '{key}'; keys look like train.lr, model.<field> or data.seq_len."
            )
        if name not in fields[section]:
            close = difflib.get_close_matches(name, list(fields[section]), n=1)
            hint = f" Did you mean '{section}.{close[0]}'?" if close else ""
            raise ForecastError(
                f"unknown search-space parameter '{key}' for model '{model_name}'.{hint} "
                f"Valid {section} keys: {', '.join(sorted(fields[section]))}."
            )
        if section == "model" and name in preset:
            raise ForecastError(f"search-space parameter '{key}' is fixed to {preset[name]!r} for '{model_name}'.")
        if section == "data" and name in ("dataset", "data_dir", "horizon"):
            raise ForecastError(f"search-space parameter '{key}' cannot be tuned; set it with a flag instead.")
        where = f"search space '{key}'"
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise ForecastError(f"{where} needs type float, int or categorical, e.g. {{type: float, low: 1.0e-4, "
                                "high: 1.0e-2, log: true}.")
        kind = spec["type"]
        allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
        extra = sorted(set(spec) - allowed)
        if extra:
            raise ForecastError(f"{where}: unknown field '{extra[0]}' for type {kind}; "
                                f"allowed: {', '.join(sorted(allowed))}.")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ForecastError(f"{where} needs a non-empty list of choices.")
            for c in choices:
                if c is not None and not isinstance(c, (bool, int, float, str)):
                    raise ForecastError(f"{where}: choices must be numbers, strings, booleans or null, got {c!r}.")
            out[key] = {"type": kind, "choices": list(choices)}
            continue
        if "low" not in spec or "high" not in spec:
            raise ForecastError(f"{where} needs low and high.")
        integer = kind == "int"
        low = _number(spec["low"], f"{where} low", integer)
        high = _number(spec["high"], f"{where} high", integer)
        if not low <= high:
            raise ForecastError(f"{where}: low ({low}) must not exceed high ({high}).")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ForecastError(f"{where}: log must be true or false.")
        if log and low <= 0:
            raise ForecastError(f"{where}: a log scale needs low > 0, got {low}.")
        entry: dict[str, Any] = {"type": kind, "low": low, "high": high, "log": log}
        if spec.get("step") is not None:
            if log:
                raise ForecastError(f"{where}: step cannot be combined with log.")
            step = _number(spec["step"], f"{where} step", integer)
            if step <= 0:
                raise ForecastError(f"{where}: step must be positive.")
            entry["step"] = step
        out[key] = entry
    return out


def _corners(spec: dict[str, Any]) -> list[Any]:
    return list(spec["choices"]) if spec["type"] == "categorical" else [spec["low"], spec["high"]]


def validate_space(space: dict[str, dict[str, Any]], model: str, dataset: str, overrides: dict[str, Any],
                   user_yaml: str | Path | None) -> None:
    """Resolve the config at every bound and choice, so an impossible value fails before the study starts."""
    for key, spec in space.items():
        for value in _corners(spec):
            try:
                resolve(model, dataset, {**overrides, key: value}, user_yaml)
            except ForecastError as err:
                raise ForecastError(f"search space '{key}' value {value!r} is not a valid config: {err}") from None


def suggest(trial: optuna.trial.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample one value per parameter of a normalized space."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            out[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            out[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec["log"])
        else:
            out[key] = trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"), log=spec["log"])
    return out


# -- sampler and pruner ---------------------------------------------------------------------------------------------
def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant liar: parallel workers
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ForecastError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}.")


def make_pruner(name: str, max_epochs: int, startup: int = 5, warmup: int = 0) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ForecastError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}.")


@functools.cache
def _pruning_callback_class() -> type:
    """optuna-integration's Lightning pruning callback, remembering the last epoch it reported.

    Built once, in the main thread, before any trial: a first import racing in two worker threads can fail.
    """
    from optuna_integration import PyTorchLightningPruningCallback

    class PruningCallback(PyTorchLightningPruningCallback):
        last: tuple[int, float] | None = None

        def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001 (Lightning's types)
            value = trainer.callback_metrics.get(self.monitor)
            if not trainer.sanity_checking and value is not None:
                self.last = (int(pl_module.current_epoch), float(value))
            super().on_validation_end(trainer, pl_module)

    return PruningCallback


def _pruning_callback(trial: optuna.trial.Trial):  # noqa: ANN201
    return _pruning_callback_class()(trial, monitor="val_loss")


def _series_key(data: DataConfig) -> DataConfig:
    """What a loaded series depends on: everything in the data config but the loader workers."""
    return dataclasses.replace(data, num_workers=0)


# -- the objective --------------------------------------------------------------------------------------------------
class DivergedError(RuntimeError):
    """A trial whose validation loss never was a finite number."""


class Objective:
    """One trial: sample, resolve the config, train without the test split, record the state in MLflow."""

    def __init__(self, *, model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
                 space: dict[str, dict[str, Any]], study_name: str, parent_run_id: str, experiment: str,
                 experiment_id: str, tracking_uri: str, pruning: bool, series: Series,
                 series_data: DataConfig) -> None:
        self.model, self.dataset, self.overrides, self.user_yaml = model, dataset, overrides, user_yaml
        self.space, self.study_name, self.parent_run_id = space, study_name, parent_run_id
        self.experiment, self.experiment_id, self.tracking_uri = experiment, experiment_id, tracking_uri
        self.pruning = pruning
        self._series: dict[DataConfig, Series] = {_series_key(series_data): series}
        self._lock = threading.Lock()
        self.running: set[int] = set()  # trial numbers this process is running now
        self.started: list[int] = []
        self.first_error: str | None = None

    def series_for(self, data: DataConfig) -> Series:
        """The loaded series for a data config, loaded once (a search over seq_len loads one per value)."""
        from forecast.data.series import load_series

        key = _series_key(data)
        with self._lock:
            if key not in self._series:
                self._series[key] = load_series(data, progress=False)
            return self._series[key]

    def __call__(self, trial: optuna.trial.Trial) -> float:
        import optuna

        with self._lock:
            self.running.add(trial.number)
            self.started.append(trial.number)
        sampled: dict[str, Any] = {}
        callback = None
        try:
            from forecast.pipeline import TrainOptions, train

            callback = _pruning_callback(trial) if self.pruning else None
            sampled = suggest(trial, self.space)
            cfg = resolve(self.model, self.dataset, {**self.overrides, **sampled}, self.user_yaml)
            tags = {"study": self.study_name, "tune_role": "trial", "trial_number": str(trial.number),
                    "trial_state": "RUNNING"}
            opts = TrainOptions(tracking_uri=self.tracking_uri, quiet=True, experiment=self.experiment,
                                run_name=f"{self.study_name}_t{trial.number}", parent_run_id=self.parent_run_id,
                                tags=tags, evaluate_test=False, callbacks=[callback] if callback else [],
                                log_artifacts=False)
            result = train(cfg, opts, series=self.series_for(cfg.data))
            trial.set_user_attr("mlflow_run_id", result.run_id)
            trial.set_user_attr("epochs_run", result.epochs_run)
            if not math.isfinite(result.best_val_loss):
                raise DivergedError("the validation loss was never finite (diverged)")
            self._record(trial, "COMPLETE", sampled, run_id=result.run_id)
            return float(result.best_val_loss)
        except optuna.TrialPruned as exc:
            last = callback.last if callback is not None else None
            self._record(trial, "PRUNED", sampled, note=str(exc), last=last)
            raise
        except SystemExit as exc:
            # Lightning turns Ctrl-C inside fit into sys.exit(1) after ignoring SIGINT; give Optuna the
            # KeyboardInterrupt back, so it marks this trial FAILED and stops, and restore Ctrl-C.
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            self._restore_sigint()
            self._record(trial, "FAILED", sampled, note="interrupted (Ctrl-C)", quiet_errors=True)
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            self._record(trial, "FAILED", sampled, note="interrupted (Ctrl-C)", quiet_errors=True)
            raise
        except Exception as exc:
            note = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:480]
            with self._lock:
                self.first_error = self.first_error or f"trial {trial.number}: {note}"
            trial.set_user_attr("error", note)
            self._record(trial, "FAILED", sampled, note=note)
            raise
        finally:
            with self._lock:
                self.running.discard(trial.number)

    @staticmethod
    def _restore_sigint() -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _child_run_id(self, mlf, number: int) -> str | None:  # noqa: ANN001
        found = mlf.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and tags.trial_number = '{number}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def _record(self, trial: optuna.trial.Trial, state: str, sampled: dict[str, Any], run_id: str | None = None,
                note: str | None = None, last: tuple[int, float] | None = None, quiet_errors: bool = False) -> None:
        """Tag the trial's nested MLflow run with its state and sampled params (creating one if none exists)."""
        from mlflow.entities import Metric, Param, RunTag

        from forecast import tracking

        try:
            mlf = tracking.client(self.tracking_uri)
            run_id = run_id or self._child_run_id(mlf, trial.number)
            if run_id is None:  # failed before training started: keep a record of the attempt anyway
                run = mlf.create_run(self.experiment_id, run_name=f"{self.study_name}_t{trial.number}", tags={
                    "mlflow.parentRunId": self.parent_run_id, "study": self.study_name, "tune_role": "trial",
                    "trial_number": str(trial.number), "model": self.model, "dataset": self.experiment})
                run_id = run.info.run_id
                mlf.set_terminated(run_id, "FAILED")
            tags = {"trial_state": state}
            if note:
                tags["trial_note"] = note[:480]
            if state == "PRUNED" and last is not None:
                tags["pruned_at_epoch"] = str(last[0])
            params = tracking.params_of({f"trial.{k}": v for k, v in sampled.items()})
            metrics = []
            if state == "PRUNED" and last is not None and math.isfinite(last[1]):
                # The pruning epoch's val_loss: the per-epoch logger runs after validation, so it never saw it.
                metrics.append(Metric("val_loss", last[1], int(time.time() * 1000), last[0]))
            mlf.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                          tags=[RunTag(k, v) for k, v in tags.items()])
            trial.set_user_attr("mlflow_run_id", run_id)
        except Exception:
            if not quiet_errors:
                raise


# -- progress -------------------------------------------------------------------------------------------------------
class TrialProgress:
    """Optuna callback: a rich progress bar of trials on a terminal, one line per trial otherwise, or nothing."""

    def __init__(self, total: int | None, quiet: bool, stream=None) -> None:  # noqa: ANN001
        self.stream = stream or sys.stderr
        self.mode = "off" if quiet else ("bar" if self.stream.isatty() else "lines")
        self.total = total
        self.done = self.complete = self.pruned = self.failed = 0
        self._lock = threading.Lock()
        self._progress = None
        self._task = None

    def __enter__(self) -> TrialProgress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("trials", total=self.total, status="best -  pruned 0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        with self._lock:
            self.done += 1
            if trial.state == TrialState.COMPLETE:
                self.complete += 1
            elif trial.state == TrialState.PRUNED:
                self.pruned += 1
            else:
                self.failed += 1
            best = _best(study)
            best_text = f"best {best.value:.5g} (#{best.number})" if best else "best -"
            counts = f"pruned {self.pruned}" + (f"  failed {self.failed}" if self.failed else "")
            if self.mode == "bar":
                self._progress.update(self._task, advance=1, status=f"{best_text}  {counts}")
                if trial.state == TrialState.FAIL:  # the error stays on screen above the bar
                    self._progress.console.print(trial_line(trial, self.done, self.total), markup=False)
            elif self.mode == "lines":
                print(trial_line(trial, self.done, self.total) + f"  {best_text}  {counts}", file=self.stream,
                      flush=True)


def trial_line(trial: FrozenTrial, done: int, total: int | None) -> str:
    """``trial 3/20 #7 PRUNED at epoch 2  val_loss 0.5123  4.1 s  train.lr=0.001 ...``."""
    from optuna.trial import TrialState

    state = trial.state.name
    parts = [f"trial {done}/{total if total is not None else '?'} #{trial.number} {state}"]
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        parts[0] += f" at epoch {max(trial.intermediate_values) + 1}"
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        parts.append(f"val_loss {trial.value:.5g}")
    elif trial.intermediate_values:
        parts.append(f"val_loss {trial.intermediate_values[max(trial.intermediate_values)]:.5g}")
    if trial.duration is not None:
        parts.append(f"{trial.duration.total_seconds():.1f} s")
    parts.append(" ".join(f"{k}={_fmt_value(v)}" for k, v in trial.params.items()))
    if trial.state == TrialState.FAIL and trial.user_attrs.get("error"):
        parts.append(f"({trial.user_attrs['error'][:120]})")
    return "  ".join(p for p in parts if p)


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _best(study: optuna.Study) -> FrozenTrial | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: t.value) if done else None


# -- the study ------------------------------------------------------------------------------------------------------
def default_study_name(cfg: RunConfig) -> str:
    dataset = Path(cfg.data.dataset).stem if Path(cfg.data.dataset).suffix else cfg.data.dataset
    return f"{cfg.model_name}-{dataset}-pl{cfg.data.horizon}"


def tune_space(cfg: RunConfig, overrides: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The normalized search space of ``cfg``, without the keys the user fixed with a flag or ``--set``."""
    space = normalize_space(cfg.search_space, cfg.model_name)
    fixed = [k for k in space if k in overrides]
    for key in fixed:
        del space[key]
    return space, fixed


def run_study(model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
              opts: TuneOptions) -> TuneResult:
    """Validate everything, then run (or resume) the study, record it in MLflow, and optionally retrain the best.

    Raises ForecastError for bad input before any trial starts. A Ctrl-C ends the running trial as FAILED,
    keeps every other trial, and returns with ``interrupted=True``.
    """
    with warnings.catch_warnings():
        # Lightning's per-fit deprecation and data-loader notes would repeat once per trial.
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
        warnings.filterwarnings("ignore", module=r"pytorch_lightning(\.|$)")
        return _run_study(model, dataset, overrides, user_yaml, opts)


def _run_study(model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
               opts: TuneOptions) -> TuneResult:
    import optuna

    from forecast import tracking
    from forecast.data.series import load_series

    t0 = time.perf_counter()
    if opts.sampler not in SAMPLERS:
        raise ForecastError(f"unknown sampler '{opts.sampler}'; use one of {', '.join(SAMPLERS)}.")
    if opts.pruner not in PRUNERS:
        raise ForecastError(f"unknown pruner '{opts.pruner}'; use one of {', '.join(PRUNERS)}.")
    if opts.n_trials is not None and opts.n_trials < 0:
        raise ForecastError("--trials must be >= 0.")
    if opts.n_jobs < 1:
        raise ForecastError("--n-jobs must be >= 1.")
    cfg = resolve(model, dataset, overrides, user_yaml)
    if cfg.train.world_size > 1 or cfg.train.strategy == "ddp":
        raise ForecastError("forecast tune trains each trial in one process on one device; to use more devices "
                            "or machines, start more workers on the same --storage (one device each, e.g. "
                            "CUDA_VISIBLE_DEVICES=1 forecast tune ...).")
    space, _fixed = tune_space(cfg, overrides)
    if not space and (opts.n_trials or 0) > 0:
        raise ForecastError(f"the search space of '{cfg.model_name}' is empty; add search_space to a --config YAML.")
    validate_space(space, model, dataset, overrides, user_yaml)
    series = load_series(cfg.data, progress=not opts.quiet)  # a missing or bad file fails here, before the study
    study_name = opts.study_name or default_study_name(cfg)
    url = storage_url(opts.storage)
    storage = open_storage(url)
    tracking.quiet_logs()
    # Our own per-trial lines (and MLflow tags) replace Optuna's per-trial log records and tracebacks.
    logging.getLogger("optuna.study._optimize").setLevel(logging.ERROR)
    logging.getLogger("optuna.study.study").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    n_before = _n_trials(storage, study_name)
    seed = (opts.sampler_seed if opts.sampler_seed is not None else cfg.train.seed) + n_before
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                    sampler=make_sampler(opts.sampler, seed), load_if_exists=True,
                                    pruner=make_pruner(opts.pruner, cfg.train.epochs, opts.pruner_startup,
                                                       opts.pruner_warmup))
    except Exception as err:
        raise ForecastError(f"cannot create or load study '{study_name}' in '{safe_url(url)}': "
                            f"{str(err).splitlines()[0][:200]}") from None
    _check_study_matches(study, cfg, series.name)

    uri = tracking.resolve_uri(opts.tracking_uri)
    mlf = _retry(lambda: tracking.client(uri))  # workers starting together on a new store race on its tables
    experiment = opts.experiment or series.name
    exp_id = _experiment_id(mlf, experiment, uri)
    parent = mlf.create_run(exp_id, run_name=f"tune_{study_name}", tags={
        **tracking.base_tags(series.name, cfg.model_name, series.sha256), "mlflow.runName": f"tune_{study_name}",
        "study": study_name, "tune_role": "study", "optuna_storage": safe_url(url), "sampler": opts.sampler,
        "pruner": opts.pruner})
    parent_id = parent.info.run_id
    from forecast import runguard

    guard = runguard.watch(uri, parent_id)  # a killed worker's parent and trial runs end FAILED, not RUNNING
    status = "FAILED"
    interrupted = False
    # Import in the main thread what the trials import, so n_jobs > 1 threads never race on a first import.
    _pruning_callback_class()
    import mlflow.entities  # noqa: F401

    import forecast.pipeline  # noqa: F401

    objective = Objective(model=model, dataset=dataset, overrides=overrides, user_yaml=user_yaml, space=space,
                          study_name=study_name, parent_run_id=parent_id, experiment=experiment,
                          experiment_id=exp_id, tracking_uri=uri, pruning=opts.pruner != "none", series=series,
                          series_data=cfg.data)
    try:
        _log_parent_params(mlf, parent_id, cfg, space, opts, study_name, seed, n_before)
        if opts.n_trials is None or opts.n_trials > 0:
            with TrialProgress(opts.n_trials, opts.quiet) as progress:
                try:
                    study.optimize(objective, n_trials=opts.n_trials, timeout=opts.timeout, n_jobs=opts.n_jobs,
                                   catch=(Exception,), callbacks=[progress], gc_after_trial=False)
                except KeyboardInterrupt:
                    interrupted = True
                    _fail_running(study, objective)
        result = _summarize(study, objective, study_name, url, parent_id, exp_id, uri, space, t0, interrupted)
        _log_parent_summary(mlf, parent_id, result)
        if opts.report and not interrupted:
            result.report_artifacts = write_report(study, mlf, parent_id)
        if opts.retrain_best and not interrupted:
            result.retrain = retrain_best(model, dataset, overrides, user_yaml, result, opts, objective)
            mlf.set_tag(parent_id, "retrain_run_id", result.retrain.run_id)
            for key in ("test_mse", "test_mae"):
                if key in result.retrain.metrics:
                    mlf.log_metric(parent_id, f"retrain_{key}", result.retrain.metrics[key])
        status = "KILLED" if interrupted else "FINISHED"
        result.wall_seconds = time.perf_counter() - t0
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            mlf.set_terminated(parent_id, status)
        finally:
            guard.release()


def _retry(fn: Callable[[], Any], attempts: int = 8) -> Any:
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


def _experiment_id(mlf, name: str, uri: str) -> str:  # noqa: ANN001
    """The experiment's id, created if needed (retried: see :func:`_retry`)."""
    from forecast import tracking

    return _retry(lambda: tracking.experiment_id(mlf, name, uri), attempts=5)


def _n_trials(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """Trials already in the study (0 for a new one): offsets the sampler seed so a resume samples afresh."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _check_study_matches(study: optuna.Study, cfg: RunConfig, dataset: str) -> None:
    """A study belongs to one model, dataset and horizon; refuse to mix another into it."""
    want = {"model": cfg.model_name, "dataset": dataset, "horizon": int(cfg.data.horizon)}
    have = study.user_attrs
    if not have:
        for key, value in want.items():
            study.set_user_attr(key, value)
        return
    diff = [f"{k} {have.get(k)!r} (not {v!r})" for k, v in want.items() if k in have and have[k] != v]
    if diff:
        raise ForecastError(f"study '{study.study_name}' was created for {', '.join(diff)}; "
                            "pass another --study-name.")


def _fail_running(study: optuna.Study, objective: Objective) -> None:
    """After Ctrl-C: any trial of ours still RUNNING (interrupted outside the objective) becomes FAILED."""
    from optuna.trial import TrialState

    for number in list(objective.running):
        try:
            study.tell(number, state=TrialState.FAIL)
        except Exception:
            pass
    objective.running.clear()


def _summarize(study: optuna.Study, objective: Objective, study_name: str, url: str, parent_id: str, exp_id: str,
               uri: str, space: dict[str, dict[str, Any]], t0: float, interrupted: bool) -> TuneResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    mine = {t.number: t for t in trials if t.number in set(objective.started)}
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                      key=lambda t: t.value)
    best = complete[0] if complete else None
    top = [{"number": t.number, "value": t.value, "params": dict(t.params),
            "epochs": int(t.user_attrs.get("epochs_run", len(t.intermediate_values))),
            "run_id": t.user_attrs.get("mlflow_run_id")} for t in complete[:TOP_TRIALS]]
    return TuneResult(
        study_name=study_name, storage=safe_url(url), parent_run_id=parent_id, experiment=objective.experiment,
        experiment_id=exp_id,
        tracking_uri=uri, trials_run=sorted(mine),
        n_complete=sum(t.state == TrialState.COMPLETE for t in mine.values()),
        n_pruned=sum(t.state == TrialState.PRUNED for t in mine.values()),
        n_failed=sum(t.state == TrialState.FAIL for t in mine.values()),
        n_total=len(trials), n_complete_total=len(complete), best_value=best.value if best else None,
        best_params=dict(best.params) if best else {}, best_trial=best.number if best else None, top=top,
        space=space, wall_seconds=time.perf_counter() - t0, interrupted=interrupted,
        first_error=objective.first_error,
    )


def _log_parent_params(mlf, run_id: str, cfg: RunConfig, space: dict[str, dict[str, Any]],  # noqa: ANN001
                       opts: TuneOptions, study_name: str, seed: int, n_before: int) -> None:
    import json

    from mlflow.entities import Param

    from forecast import tracking

    flat = {**cfg.flat(), "tune.study": study_name, "tune.trials": opts.n_trials, "tune.timeout": opts.timeout,
            "tune.sampler": opts.sampler, "tune.sampler_seed": seed, "tune.pruner": opts.pruner,
            "tune.pruner_startup": opts.pruner_startup, "tune.pruner_warmup": opts.pruner_warmup,
            "tune.n_jobs": opts.n_jobs, "tune.trials_before": n_before,
            "tune.search_space": json.dumps(space, separators=(",", ":"))}
    params = tracking.params_of(flat)
    mlf.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])


def _log_parent_summary(mlf, run_id: str, result: TuneResult) -> None:  # noqa: ANN001
    from mlflow.entities import Metric, Param

    from forecast import tracking

    now = int(time.time() * 1000)
    metrics = {"n_complete": result.n_complete, "n_pruned": result.n_pruned, "n_failed": result.n_failed,
               "n_trials_study": result.n_total}
    params: dict[str, str] = {}
    if result.best_value is not None:
        metrics["best_value"] = result.best_value
        metrics["best_trial"] = result.best_trial
        params = tracking.params_of({f"best.{k}": v for k, v in result.best_params.items()})
    mlf.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                  params=[Param(k, v) for k, v in params.items()])
    if result.best_trial is not None:
        mlf.set_tag(run_id, "best_trial", str(result.best_trial))


# -- after the study ------------------------------------------------------------------------------------------------
def retrain_best(model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
                 result: TuneResult, opts: TuneOptions, objective: Objective | None = None) -> TrainResult:
    """Train the study's best configuration and evaluate it on the test split, as a separate, tagged run."""
    from forecast.pipeline import TrainOptions, train

    if result.best_trial is None:
        raise ForecastError(f"study '{result.study_name}' has no completed trial to retrain; run some trials first.")
    cfg = resolve(model, dataset, {**overrides, **result.best_params}, user_yaml)
    tags = {"study": result.study_name, "tune_role": "retrain_best", "best_trial": str(result.best_trial),
            "tune_parent_run_id": result.parent_run_id, "optuna_storage": result.storage}
    return train(cfg, TrainOptions(tracking_uri=opts.tracking_uri, quiet=opts.quiet, experiment=opts.experiment,
                                   run_name=f"tune_{result.study_name}_best", tags=tags, evaluate_test=True),
                 series=objective.series_for(cfg.data) if objective is not None else None)


def write_report(study: optuna.Study, mlf, run_id: str) -> list[str]:  # noqa: ANN001
    """Optuna's optimization history and parameter importances as one self-contained HTML, plus trials.csv."""
    import tempfile

    import optuna.visualization as vis
    from optuna.trial import TrialState

    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ForecastError("--report needs plotly: pip install plotly") from None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sections: list[tuple[str, str]] = []
    figs = [("Optimization history", vis.plot_optimization_history(study))]
    varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) >= 2 and varied:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                figs.append(("Parameter importances", vis.plot_param_importances(study)))
            except Exception as err:  # too few distinct trials for the evaluator
                sections.append(("Parameter importances", f"<p>not available: {err}</p>"))
    else:
        sections.append(("Parameter importances", "<p>not available: needs at least 2 completed trials "
                                                   "with different parameters.</p>"))
    body = []
    for i, (title, fig) in enumerate(figs):
        body.append(f"<h2>{title}</h2>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    body += [f"<h2>{title}</h2>{html}" for title, html in sections]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{study.study_name}</title></head><body>"
            f"<h1>Study {study.study_name}</h1>" + "\n".join(body) + "</body></html>")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "tune_report.html").write_text(page)
        study.trials_dataframe().to_csv(out / "trials.csv", index=False)
        mlf.log_artifacts(run_id, str(out))
    return ["tune_report.html", "trials.csv"]
