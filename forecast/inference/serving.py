"""The MLflow pyfunc model of a run: logged by every ``forecast train``, served by ``mlflow models serve``.

The model is logged with a loader module (this one): MLflow imports the installed ``forecast`` package and calls
:func:`_load_pyfunc` on the model's data folder, which holds only the files of :mod:`forecast.artifact`
(``model_state.pt`` loaded with ``weights_only=True``, ``config.yaml``, ``forecast_model.json``). Nothing is
cloudpickled and no code travels in the model, so editing a downloaded model cannot make a server run anything.
Loading needs the ``forecast`` package installed (serve with ``--env-manager local``), never the training data.

**Input** of ``predict``: a DataFrame with a ``date`` column (datetimes or ISO strings) and the model's
columns (any order), at least L rows at the model's frequency, sorted, no duplicates, no gaps in the
values unless ``params={"fill": "ffill" | "interpolate"}``. A model with future covariates takes two frames,
``{"history": that DataFrame, "future": date + the future covariates over exactly the H steps after it}``; served,
``{"inputs": {"history": {"columns": [...], "data": [...]}, "future": {"columns": [...], "data": [...]}}}``.
**Output**: the forecast of the targets over the H steps after the last row, as a DataFrame with ``date`` and the
target columns in original units; ``params={"horizon": h}`` (h <= H) truncates it. Bad input raises an
``MlflowException`` (HTTP 400 when served) with a one-line message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from forecast import artifact, tracking
from forecast.artifact import LoadedModel, ModelMeta
from forecast.data.panel import is_long, to_wide
from forecast.errors import ForecastError
from forecast.inference.io import (
    check_fill, forecast_columns, panel_columns, parse_levels, parse_quantiles, prepare_future, prepare_history,
)
from forecast.inference.predict import forecast_next

LOADER = __name__  # MLflow imports this installed module and calls _load_pyfunc: the model folder holds no code
DATA_DIR = "forecast"  # the folder of the model's files inside the MLflow model
ARTIFACT_PATH = "model"
DEFAULT_ALIAS = "champion"
PARAMS = ("horizon", "fill", "level", "quantiles")  # the params of predict (and of the signature)
MAX_ROWS = 100_000  # rows a request may carry: far more than any L, far less than exhausts a worker


class RequestError(MlflowException):
    """A bad request: HTTP 400 whose JSON ``message`` is our one line alone.

    MLflow's scoring server prefixes an error's message with the whole request (``Failed to predict data
    '<DataFrame>'. Error: ...``) by assigning ``message``; that assignment is ignored here, so the caller gets the
    line that says what to fix and never an echo of the payload."""

    def __init__(self, line: str) -> None:
        self._line = line
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass


class Forecaster:
    """What MLflow serves: history DataFrame in, forecast DataFrame out (``predict(model_input, params)``)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def predict(self, model_input: pd.DataFrame | dict, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The next H (or ``params["horizon"]``) steps after ``model_input``'s last row, in original units
        (``model_input``: the history, or ``{"history": ..., "future": ...}``)."""
        params = params or {}
        fill = params.get("fill") or None
        fill = None if fill in (None, "", "none") else str(fill)
        horizon = params.get("horizon")
        try:
            model_input, future = input_frames(model_input)
            if horizon is not None and (isinstance(horizon, bool) or not str(horizon).lstrip("-").isdigit()):
                raise ForecastError(f"params.horizon must be an integer, got {horizon!r}.")
            h = self.model.meta.check_horizon(None if horizon is None else int(horizon), "params.horizon")
            check_fill(fill, "params.fill")
            levels = parse_levels(params.get("level") or None, self.model.intervals[0] if self.model.intervals
                                  else None, "params.level")
            qs = parse_quantiles(params.get("quantiles") or None, self.model.quantiles, "params.quantiles")
            if len(model_input) > MAX_ROWS:
                raise ForecastError(f"the request has {len(model_input):,} rows; send at most {MAX_ROWS:,} (the "
                                    f"model reads the last L={self.model.meta.seq_len}).")
            long = is_long([str(c) for c in model_input.columns])  # unique_id, ds, y: answered in that shape
            if long:
                frame = to_wide(_to_polars(model_input), "input", align=fill is not None).tail(self.model.meta.seq_len)
            else:
                # Only the rows a forecast reads are converted and checked, so a long history costs what a short one
                # does (a gap or a disorder further back cannot change this forecast).
                frame = _to_polars(model_input.tail(self.model.meta.seq_len))
            table = prepare_history(frame, self.model.meta, "input", fill)
            rows = prepare_future(None if future is None else _to_polars(future), self.model.meta, table.dates[-1],
                                  "the future frame", "a future frame (inputs.future: date + those columns)")
            fc = forecast_next(self.model, table, h, levels, qs, rows)
        except ForecastError as err:
            raise RequestError(str(err)) from None
        return pd.DataFrame(panel_columns(fc) if long else forecast_columns(fc))


def _load_pyfunc(data_path: str) -> Forecaster:
    """MLflow's loader-module entry point: the forecaster from the model's data folder (weights, JSON, YAML), with
    the code of the installed package; nothing in the model folder is run."""
    return Forecaster(artifact.load(artifact.artifact_paths(Path(data_path)), "pyfunc model"))


class ForecastPyfunc(PythonModel):
    """The pyfunc of models logged by 0.1.0 ("models from code": their folder carries a code file that builds this
    class). New models use the loader module above and carry no code."""

    def __init__(self) -> None:
        self.forecaster: Forecaster | None = None

    def load_context(self, context: Any) -> None:
        paths = {k: Path(v) for k, v in context.artifacts.items()}
        self.forecaster = Forecaster(artifact.load(paths, "pyfunc model"))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.forecaster is None:
            self.load_context(context)
        assert self.forecaster is not None
        return self.forecaster.predict(model_input, params)


def input_frames(model_input: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(history, future or None) from a DataFrame, or from ``{"history": ..., "future": ...}`` whose values are
    DataFrames, split-orient dicts (``columns``, ``data``) or lists of records (what the scoring server hands on from
    ``{"inputs": {...}}``, each wrapped in a 0-d array)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input, None
    shape = ('a table (DataFrame) with a date column and the model\'s columns, or {"history": ..., "future": ...}')
    if not isinstance(model_input, dict):
        raise ForecastError(f"the input must be {shape}, got {type(model_input).__name__}.")
    unknown = sorted(set(map(str, model_input)) - {"history", "future"})
    if unknown or "history" not in model_input:
        raise ForecastError(f"the input's frames must be history (and future for future covariates), got "
                            f"{', '.join(map(str, model_input)) or 'none'}; send {shape}.")
    return _frame(model_input["history"], "history"), (None if model_input.get("future") is None
                                                       else _frame(model_input["future"], "future"))


def _frame(value: Any, name: str) -> pd.DataFrame:
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        value = value.item()
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):
        try:
            return pd.DataFrame(value["data"], columns=[str(c) for c in value["columns"]])
        except ValueError as err:
            raise ForecastError(f"inputs.{name}: its rows do not fit its columns ({err}).") from None
    if isinstance(value, (list, np.ndarray)) and all(isinstance(r, dict) for r in value):
        return pd.DataFrame(list(value))
    raise ForecastError(f'inputs.{name} must be a frame: {{"columns": ["date", ...], "data": [[...], ...]}} or a '
                        "list of records.")


def _to_polars(df: pd.DataFrame) -> pl.DataFrame:
    """A polars frame of ``df``; object columns (mixed JSON values) go through as strings, so validation can
    name a bad cell instead of failing on the conversion."""
    return pl.DataFrame([pl.from_pandas(df[c].astype("string") if df[c].dtype == object else df[c]).alias(str(c))
                         for c in df.columns])


# --------------------------------------------------------------------------------------------------
# Logging and registering
# --------------------------------------------------------------------------------------------------


def signature(meta: ModelMeta) -> ModelSignature:
    """Output: ``date`` (datetime) + the variates. Params: ``horizon`` (default H) and ``fill`` (none | ffill |
    interpolate).

    No input schema: MLflow would drop a column it does not name and convert values before the model sees them,
    so an extra column would pass the server while ``forecast predict`` rejects it. The pyfunc checks the input
    itself, exactly as predict does (``date`` + the model's columns, in any order; the input example shows them).
    """
    # The date is "any": JSON and CSV bring strings, Python callers datetimes; prepare_history parses both.
    values = [ColSpec("double", c) for c in meta.target_columns]
    outputs = Schema([ColSpec("datetime", meta.date_column), *values])
    horizon, fill, level, quantiles = PARAMS
    params = ParamSchema([ParamSpec(horizon, "long", meta.horizon), ParamSpec(fill, "string", "none"),
                          ParamSpec(level, "string", ""), ParamSpec(quantiles, "string", "")])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def requirements() -> list[str]:
    """Pinned runtime dependencies (given explicitly, so logging never spawns an inference subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "polars", "pyyaml"):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"{dist}=={version(dist).split('+')[0]}")
    return out


def log_model(uri: str, run_id: str, meta: ModelMeta, config: dict[str, Any], state: dict[str, torch.Tensor],
              example_dates: np.ndarray, example_values: np.ndarray,
              intervals: tuple[tuple[float, ...], np.ndarray] | None = None) -> str:
    """Log the pyfunc model of ``run_id`` under ``model``; returns its ``runs:/`` URI.

    ``example_dates``/``example_values`` (the last L training rows, original units) become the input example.
    """
    example = None  # a model with future covariates takes two frames: their shape is in the docstring and README
    if not meta.future_columns:
        example = pd.DataFrame({meta.date_column: pd.DatetimeIndex(example_dates).strftime("%Y-%m-%d %H:%M:%S")})
        shortest = np.asarray(example_values).astype(str).astype(np.float64)  # 11.052, not 11.052000045776367
        for j, c in enumerate(meta.columns):
            example[c] = shortest[:, j]
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    with tempfile.TemporaryDirectory(prefix="forecast-pyfunc-") as tmp:
        data = Path(tmp) / DATA_DIR
        artifact.write(data, meta, config, state, intervals)
        active = mlflow.active_run() is not None
        mlflow_log.setLevel(logging.WARNING)  # no "Validating input example" chatter during training
        try:
            with tracking.fluent_store(uri), tracking.pinned_requirements(), \
                    mlflow.start_run(run_id=run_id, nested=active), warnings.catch_warnings():
                # MLflow 3.18 asks for an input example in a coloured warning; two frames have none it can take
                warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
                mlflow.pyfunc.log_model(name=ARTIFACT_PATH, loader_module=LOADER, data_path=str(data),
                                        signature=signature(meta), input_example=example,
                                        pip_requirements=requirements())
        finally:
            mlflow_log.setLevel(level)
    return f"runs:/{run_id}/{ARTIFACT_PATH}"


def check_alias(alias: str) -> None:
    """MLflow reserves ``latest`` and ``v<digits>``; say so before any training is spent."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", alias) or alias.lower() == "latest" or re.fullmatch(
            r"[vV]\d+", alias):
        raise ForecastError(f"alias '{alias}' is not allowed; use a word like champion or production "
                            "('latest' and v<number> are reserved by MLflow).")


def register(uri: str, run_id: str, name: str, alias: str = DEFAULT_ALIAS) -> str:
    """Register the run's logged ``model`` as a new version of ``name`` and point ``alias`` at it; the version."""
    check_alias(alias)
    tracking.quiet_logs()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        # MLflow resolves the version's models:/ source through the fluent store: point that at uri too (else it
        # looks in ./mlflow.db, fails, and leaves that file behind)
        with tracking.fluent_store(uri):
            return _register(client, run_id, name, alias)
    except MlflowException as err:
        first = (str(err).strip().splitlines() or ["error"])[0][:300]
        raise ForecastError(f"could not register the model as '{name}@{alias}' ({first}); "
                            "use a plain name and an alias like champion (not 'latest' or v1).") from None


def _register(client: Any, run_id: str, name: str, alias: str) -> str:
    """A new version of ``name`` from the run's logged ``model``, with ``alias`` pointing at it."""
    run = client.get_run(run_id)
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id], max_results=1,
                                        filter_string=f"source_run_id = '{run_id}' AND name = '{ARTIFACT_PATH}'")
    if not found:
        raise ForecastError(f"run {run_id} has no logged '{ARTIFACT_PATH}' to register; train it again.")
    model = found[0]
    with contextlib.suppress(MlflowException):  # already registered: add a version
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"models:/{model.model_id}", run_id=run_id,
                                          model_id=model.model_id, await_creation_for=0)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)
