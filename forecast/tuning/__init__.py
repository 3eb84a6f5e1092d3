"""Hyperparameter search with Optuna: pruned, resumable, shareable studies, recorded in MLflow.

Every trial trains through :func:`forecast.pipeline.train`, the same path as ``forecast train``, with
``evaluate_test=False``: the test split is never loaded while tuning. The objective is the best validation
loss; it is reported to the pruner after every epoch by optuna-integration's Lightning pruning callback.

Studies live in an Optuna RDB storage (``sqlite:///optuna.db`` in the working directory by default), so
running the same command again resumes a study, and several processes (or machines, on one RDB server)
share it. MLflow gets one parent run per invocation and one nested run per trial, tagged with the trial's
state (``COMPLETE``, ``PRUNED`` or ``FAILED``). ``--retrain-best`` trains the best configuration once more,
evaluates it on the test split and records it as a separate run tagged as the study's result.

Modules: ``options`` (what to do, what was done), ``storage`` (Optuna storage, sampler, pruner), ``space``
(search spaces), ``objective`` (one trial), ``progress`` (the terminal), ``report`` (the MLflow parent run),
``study`` (the driver).
"""

from forecast.tuning.options import TuneOptions, TuneResult
from forecast.tuning.space import normalize_space, validate_space
from forecast.tuning.study import retrain_best, run_study

__all__ = ["TuneOptions", "TuneResult", "normalize_space", "retrain_best", "run_study", "validate_space"]
