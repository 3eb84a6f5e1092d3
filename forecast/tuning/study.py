"""The study: validate everything, run (or resume) the trials, record them in MLflow, retrain the best."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from forecast import runguard, tracking
from forecast.config import RunConfig
from forecast.data.catalogue import dataset_name
from forecast.data.series import load_series
from forecast.errors import ForecastError
from forecast.pipeline import TrainOptions, TrainResult, train
from forecast.resolve import resolve
from forecast.train import check_precision
from forecast.tuning.objective import Objective
from forecast.tuning.options import PRUNERS, SAMPLERS, TOP_TRIALS, TuneOptions, TuneResult
from forecast.tuning.progress import TrialProgress
from forecast.tuning.report import log_parent_params, log_parent_summary, write_report
from forecast.tuning.space import check_space_fits, tune_space, validate_space
from forecast.process import dead_owner
from forecast.tracking import safe_url
from forecast.tuning.storage import make_pruner, make_sampler, n_trials, open_storage, retry, storage_url


def default_study_name(cfg: RunConfig) -> str:
    """``dlinear-ETTh1-pl96``; a run with targets or covariates is another study: ``dlinear-ETTh1-pl96-MS-OT``."""
    d = cfg.data
    roles = "" if not d.setting else f"-{d.features}" + ("-" + "+".join(d.target) if d.target else "") + \
        ("-cov" if d.past_covariates or d.future_covariates else "")
    return f"{cfg.model_name}-{dataset_name(d.dataset)}-pl{d.horizon}{roles}"


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
    t0 = time.perf_counter()
    if opts.sampler not in SAMPLERS:
        raise ForecastError(f"unknown sampler '{opts.sampler}'; use one of {', '.join(SAMPLERS)}.")
    if opts.pruner not in PRUNERS:
        raise ForecastError(f"unknown pruner '{opts.pruner}'; use one of {', '.join(PRUNERS)}.")
    if opts.n_trials is not None and opts.n_trials < 0:
        raise ForecastError("--trials must be >= 0.")
    if opts.n_jobs < 1:
        raise ForecastError("--n-jobs must be >= 1.")
    if opts.timeout is not None and not opts.timeout > 0:
        raise ForecastError(f"--timeout {opts.timeout:g} must be a positive number of seconds.")
    cfg = resolve(model, dataset, overrides, user_yaml)
    if cfg.train.world_size > 1 or cfg.train.strategy == "ddp":
        raise ForecastError("forecast tune trains each trial in one process on one device; to use more devices "
                            "or machines, start more workers on the same --storage (one device each, e.g. "
                            "CUDA_VISIBLE_DEVICES=1 forecast tune ...).")
    check_precision(cfg.train)  # once, not as the error of every trial
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
    n_before = n_trials(storage, study_name)
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
    check_space_fits(study, space)
    _fail_orphans(study)

    uri = tracking.resolve_uri(opts.tracking_uri)
    mlf = retry(lambda: tracking.client(uri))  # workers starting together on a new store race on its tables
    experiment = opts.experiment or series.name
    exp_id = _experiment_id(mlf, experiment, uri)
    runguard.close_orphans(mlf, exp_id)  # runs of workers killed with their guards
    parent = mlf.create_run(exp_id, run_name=f"tune_{study_name}", tags={
        **tracking.base_tags(series.name, cfg.model_name, series.sha256), "mlflow.runName": f"tune_{study_name}",
        "study": study_name, "tune_role": "study", "optuna_storage": safe_url(url), "sampler": opts.sampler,
        "pruner": opts.pruner})
    parent_id = parent.info.run_id

    guard = runguard.watch(uri, parent_id)  # a killed worker's parent and trial runs end FAILED, not RUNNING
    status = "FAILED"
    interrupted = False
    objective = Objective(model=model, dataset=dataset, overrides=overrides, user_yaml=user_yaml, space=space,
                          study_name=study_name, parent_run_id=parent_id, experiment=experiment,
                          experiment_id=exp_id, tracking_uri=uri, pruning=opts.pruner != "none", series=series,
                          series_data=cfg.data)
    try:
        log_parent_params(mlf, parent_id, cfg, space, opts, study_name, seed, n_before)
        if opts.n_trials is None or opts.n_trials > 0:
            with TrialProgress(opts.n_trials, opts.quiet) as progress:
                try:
                    study.optimize(objective, n_trials=opts.n_trials, timeout=opts.timeout, n_jobs=opts.n_jobs,
                                   catch=(Exception,), callbacks=[progress], gc_after_trial=False)
                except KeyboardInterrupt:
                    interrupted = True
                    _fail_running(study, objective)
        result = _summarize(study, objective, study_name, url, parent_id, exp_id, uri, space, t0, interrupted)
        log_parent_summary(mlf, parent_id, result)
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
        runguard.end_run(mlf, parent_id, status, guard)


def _experiment_id(mlf: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if needed (retried: see :func:`_retry`)."""
    return retry(lambda: tracking.experiment_id(mlf, name, uri), attempts=5)


def _fail_orphans(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a worker of this machine that has died (kill -9, OOM) are FAILED now, whatever the
    time; Optuna's heartbeat would wait 180 s and need another trial to start. Other machines' trials are left to
    the heartbeat, as their workers cannot be seen from here."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_owner(str(trial.user_attrs.get("worker", ""))):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    return failed


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
    for number in list(objective.running):
        try:
            study.tell(number, state=TrialState.FAIL)
        except Exception:
            pass
    objective.running.clear()


def _summarize(study: optuna.Study, objective: Objective, study_name: str, url: str, parent_id: str, exp_id: str,
               uri: str, space: dict[str, dict[str, Any]], t0: float, interrupted: bool) -> TuneResult:
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


def retrain_best(model: str, dataset: str, overrides: dict[str, Any], user_yaml: str | Path | None,
                 result: TuneResult, opts: TuneOptions, objective: Objective | None = None) -> TrainResult:
    """Train the study's best configuration and evaluate it on the test split, as a separate, tagged run."""
    if result.best_trial is None:
        raise ForecastError(f"study '{result.study_name}' has no completed trial to retrain; run some trials first.")
    cfg = resolve(model, dataset, {**overrides, **result.best_params}, user_yaml)
    tags = {"study": result.study_name, "tune_role": "retrain_best", "best_trial": str(result.best_trial),
            "tune_parent_run_id": result.parent_run_id, "optuna_storage": result.storage}
    return train(cfg, TrainOptions(tracking_uri=opts.tracking_uri, quiet=opts.quiet, experiment=opts.experiment,
                                   run_name=f"tune_{result.study_name}_best", tags=tags, evaluate_test=True),
                 series=objective.series_for(cfg.data) if objective is not None else None)
