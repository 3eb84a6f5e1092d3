"""What a study leaves on its MLflow parent run: the config and options, the best trial, and with ``--report``
Optuna's plots as one HTML page and the trials as CSV."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import optuna.visualization as vis
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from optuna.trial import TrialState

from forecast import tracking
from forecast.config import RunConfig
from forecast.errors import ForecastError
from forecast.tuning.options import TuneOptions, TuneResult


def log_parent_params(mlf: MlflowClient, run_id: str, cfg: RunConfig, space: dict[str, dict[str, Any]],
                       opts: TuneOptions, study_name: str, seed: int, n_before: int) -> None:



    flat = {**cfg.flat(), "tune.study": study_name, "tune.trials": opts.n_trials, "tune.timeout": opts.timeout,
            "tune.sampler": opts.sampler, "tune.sampler_seed": seed, "tune.pruner": opts.pruner,
            "tune.pruner_startup": opts.pruner_startup, "tune.pruner_warmup": opts.pruner_warmup,
            "tune.n_jobs": opts.n_jobs, "tune.trials_before": n_before,
            "tune.search_space": json.dumps(space, separators=(",", ":"))}
    params = tracking.params_of(flat)
    mlf.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])


def log_parent_summary(mlf: MlflowClient, run_id: str, result: TuneResult) -> None:


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


def write_report(study: optuna.Study, mlf: MlflowClient, run_id: str) -> list[str]:
    """Optuna's optimization history and parameter importances as one self-contained HTML, plus trials.csv."""
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
