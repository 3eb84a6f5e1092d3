"""The model artifact's format, its one owner: what a saved forecaster is made of, written and read here only.

A model artifact (the ``model`` of every ``forecast train`` run, an MLflow pyfunc; see
:mod:`forecast.inference.serving`) holds:

- ``model_state.pt``: the state dict, loaded with ``torch.load(weights_only=True)``; data-derived tensors such
  as OrthoTrans ``q_in``/``q_out`` are buffers in it (artifacts of 0.1.0 also carry ``orthotrans_q.npz``, a copy
  that is never read);
- ``config.yaml``: the resolved run config (``RunConfig.to_dict()``);
- ``forecast_model.json``: the :class:`ModelMeta`: columns in order, scaler mean/std, frequency, L, H,
  the model name, the number of time-feature channels and the package version;
- ``intervals.npz`` (when calibrated): ``levels [K]``, conformal half-widths ``widths [K, H, N]`` (standardized).

Nothing is pickled. Rebuilding needs the ``forecast`` package, never the training data.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

import forecast
from forecast.errors import ForecastError
from forecast.models import ModelContext, build_config, create_model, extras_from_state, get_spec

META_FILE = "forecast_model.json"
STATE_FILE = "model_state.pt"
CONFIG_FILE = "config.yaml"
INTERVALS_FILE = "intervals.npz"
META_FORMAT = 1
DATE_COL = "date"
# What a description may ask for: far past any benchmark (L, H <= 720; 862 variates), far short of what would
# exhaust memory before the weights are compared with it.
MAX_STEPS = 100_000
MAX_VARS = 100_000
MAX_MARKS = 64


@dataclass(frozen=True)
class ModelMeta:
    """What predicting needs besides the weights: the input schema, the scaler and the model's shape."""

    model_name: str
    seq_len: int  # L: rows of history one forecast reads
    horizon: int  # H: steps it forecasts
    columns: list[str]  # the variates, in the model's order
    mean: list[float]  # train-split scaler, per column
    std: list[float]
    freq: str  # pandas alias of the training data's step, e.g. "h", "15min", "W-TUE"
    n_marks: int  # time-feature channels fed to the model (0: none)
    forecast_version: str
    date_column: str = DATE_COL
    format: int = META_FORMAT
    mark_freq: str | None = None  # the step of the time features when not ``freq`` (data.mark_freq)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> ModelMeta:
        """``doc``, every field checked for type and range before anything is built (no allocation on its word)."""
        if not isinstance(doc, dict):
            raise ForecastError(f"{where} is not a forecast model description (not a JSON object).")
        try:
            meta = cls(**doc)
        except TypeError as err:
            raise ForecastError(f"{where} is not a forecast model description ({err}).") from None
        _check_meta(meta, where)
        return meta

    @property
    def n_vars(self) -> int:
        return len(self.columns)

    def check_horizon(self, horizon: int | None, name: str = "--horizon") -> int:
        """The steps to keep: ``horizon`` (``name``: the flag or ``params.horizon``), at most H; None means H."""
        if horizon is None:
            return self.horizon
        if not 1 <= horizon <= self.horizon:
            raise ForecastError(f"{name} {horizon} is outside 1..{self.horizon}; the model forecasts "
                                f"H={self.horizon} steps, so ask for at most that many.")
        return horizon


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(meta: ModelMeta, where: str) -> None:
    def bad(field: str, why: str) -> ForecastError:
        return ForecastError(f"{where}: {field} {why}; the model artifact is damaged or was edited, log it again.")

    if not _is_int(meta.format):
        raise bad("format", f"must be an integer, got {meta.format!r}")
    if meta.format > META_FORMAT:
        raise ForecastError(f"{where} has format {meta.format}, newer than this forecast "
                            f"understands ({META_FORMAT}); upgrade forecast.")
    for field, top in (("seq_len", MAX_STEPS), ("horizon", MAX_STEPS), ("n_marks", MAX_MARKS)):
        value, low = getattr(meta, field), 0 if field == "n_marks" else 1
        if not _is_int(value) or not low <= value <= top:
            raise bad(field, f"must be an integer in {low}..{top}, got {value!r}")
    for field in ("model_name", "freq", "forecast_version", "date_column"):
        if not isinstance(getattr(meta, field), str) or not getattr(meta, field):
            raise bad(field, f"must be a non-empty string, got {getattr(meta, field)!r}")
    if not isinstance(meta.columns, list) or not 1 <= len(meta.columns) <= MAX_VARS or not all(
            isinstance(c, str) and c for c in meta.columns):
        raise bad("columns", f"must be a list of 1..{MAX_VARS} non-empty names")
    if len(set(meta.columns)) != len(meta.columns) or meta.date_column in meta.columns:
        raise bad("columns", "must be distinct names, none of them the date column")
    for field in ("mean", "std"):
        values = getattr(meta, field)
        if not isinstance(values, list) or len(values) != len(meta.columns) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad(field, f"must be {len(meta.columns)} finite numbers, one per column")
    if not all(v > 0 for v in meta.std):
        raise bad("std", "must be positive")
    for field in ("freq", "mark_freq"):
        value = getattr(meta, field)
        if value is not None and not _is_frequency(value):
            raise bad(field, f"must be a pandas frequency such as h or 15min, got {value!r}")


def _is_frequency(value: Any) -> bool:
    try:
        pd.tseries.frequencies.to_offset(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


@dataclass
class LoadedModel:
    """A forecaster rebuilt from an artifact, in eval mode on the CPU, with its metadata and config."""

    meta: ModelMeta
    model: torch.nn.Module
    config: dict[str, Any]
    source: str = ""
    intervals: tuple[tuple[float, ...], np.ndarray] | None = None  # conformal levels, half-widths [K, H, N]

    @torch.no_grad()
    def forward_scaled(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        """``x [B, L, N]`` standardized -> ``[B, H, N]`` standardized."""
        return self.model(x, x_mark, y_mark)


def artifact_paths(model_dir: Path) -> dict[str, Path]:
    """``{name: path}`` of a model's files: an MLflow model directory (MLmodel) or a plain folder of them."""
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        try:
            doc = yaml.safe_load(mlmodel.read_text()) or {}
        except yaml.YAMLError:
            doc = {}
        flavor = ((doc.get("flavors") or {}).get("python_function") or {}) if isinstance(doc, dict) else {}
        if isinstance(flavor.get("data"), str):  # a loader-module model: the files in its data folder
            data = (model_dir / flavor["data"]).resolve()
            if not data.is_relative_to(model_dir.resolve()):
                raise ForecastError(f"{mlmodel}: its data folder '{flavor['data']}' lies outside the model; the "
                                    "artifact was edited, log it again.")
            model_dir = data
        else:  # 0.1.0 ("models from code"): the files are its named artifacts
            arts = flavor.get("artifacts") or {}
            paths = {name: model_dir / spec["path"] for name, spec in arts.items() if isinstance(spec, dict)}
            if "meta" in paths:
                return paths
    if (model_dir / META_FILE).is_file():
        names = {"meta": META_FILE, "state": STATE_FILE, "config": CONFIG_FILE, "intervals": INTERVALS_FILE}
        return {k: model_dir / v for k, v in names.items() if (model_dir / v).is_file()}
    raise ForecastError(f"no forecast model in '{model_dir}' (no MLmodel with a '{META_FILE}' artifact); "
                        "give runs:/RUN_ID/model, models:/NAME@ALIAS or the folder of a logged model.")


def read_meta(paths: dict[str, Path]) -> ModelMeta:
    path = paths["meta"]
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ForecastError(f"{path} could not be read ({err}); the model artifact is damaged.") from None
    return ModelMeta.from_dict(doc, str(path))


def build_model(meta: ModelMeta, config: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The forecaster for ``meta``/``config`` with ``state`` loaded (strict), in eval mode."""
    model_section = config.get("model") if isinstance(config, dict) else None
    model_cfg = build_config(meta.model_name, model_section if isinstance(model_section, dict) else {})
    extras = extras_from_state(get_spec(meta.model_name).extras(model_cfg), state)

    def build(device: str) -> torch.nn.Module:
        ctx = ModelContext(seq_len=meta.seq_len, horizon=meta.horizon, n_vars=meta.n_vars, n_marks=meta.n_marks,
                           extras={k: v.to(device) for k, v in extras.items()})
        with torch.device(device):
            return create_model(meta.model_name, model_cfg, ctx)

    # First a skeleton that allocates nothing: the description must fit the weights before memory is spent on it.
    _check_shapes(build("meta").state_dict(), state, meta)
    model = build("cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _check_shapes(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], meta: ModelMeta) -> None:
    what = (f"a {meta.model_name} with L={meta.seq_len}, H={meta.horizon}, {meta.n_vars} columns and {meta.n_marks} "
            "time features")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(expected[k].shape) != tuple(state[k].shape)]
    if missing or extra:
        name = (missing or extra)[0]
        raise ForecastError(f"the saved weights do not fit {what}: '{name}' is "
                            f"{'missing from' if missing else 'unexpected in'} the state dict; the artifact was made "
                            "by an incompatible forecast version, or its files were edited.")
    if wrong:
        k = wrong[0]
        raise ForecastError(f"the saved weights do not fit {what}: '{k}' is {list(state[k].shape)} in the state dict "
                            f"but {list(expected[k].shape)} for that description; the artifact's files disagree.")


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict, safely (``weights_only``), every tensor finite; anything else is one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (a cut-short zip, a pickle that weights_only refuses, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ForecastError(f"{path} is not a readable state dict ({first}); the model artifact is cut short or "
                            "damaged, log it again.") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ForecastError(f"{path} is not a state dict of named tensors; the model artifact is damaged.")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ForecastError(f"{path}: the weights '{key}' hold NaN or inf values; the model diverged or the "
                                "file was damaged, so it cannot forecast.")
    return state


def load(paths: dict[str, Path], source: str = "") -> LoadedModel:
    """Rebuild a :class:`LoadedModel` from an artifact's files (what the pyfunc's ``load_context`` calls)."""
    meta = read_meta(paths)
    for key in ("state", "config"):
        if key not in paths or not paths[key].is_file():
            raise ForecastError(f"the model artifact {source or paths['meta'].parent} has no {key} file; "
                                "it is incomplete.")
    try:
        config = yaml.safe_load(paths["config"].read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ForecastError(f"{paths['config']} could not be read ({first}); the model artifact is damaged.") from None
    if not isinstance(config, dict):
        raise ForecastError(f"{paths['config']} is not a mapping of config sections; the model artifact is damaged.")
    intervals = read_intervals(paths.get("intervals"), meta)
    return LoadedModel(meta, build_model(meta, config, _load_state(paths["state"])), config, source, intervals)


def model_meta(model_name: str, seq_len: int, horizon: int, columns: list[str], mean: np.ndarray, std: np.ndarray,
               freq: str, n_marks: int, mark_freq: str | None = None) -> ModelMeta:
    return ModelMeta(model_name=model_name, seq_len=seq_len, horizon=horizon, columns=list(columns),
                     mean=[float(v) for v in mean], std=[float(v) for v in std], freq=freq, n_marks=n_marks,
                     forecast_version=forecast.__version__, mark_freq=mark_freq)


def write(out: Path, meta: ModelMeta, config: dict[str, Any], state: dict[str, torch.Tensor],
          intervals: tuple[tuple[float, ...], np.ndarray] | None = None) -> dict[str, str]:
    """Write the model's files into ``out``; returns ``{artifact name: path}`` for the pyfunc's ``artifacts``.

    Each thing once: the data-derived tensors (OrthoTrans Q) are buffers in the state dict, nowhere else."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"meta": out / META_FILE, "config": out / CONFIG_FILE, "state": out / STATE_FILE}
    paths["meta"].write_text(meta.to_json())
    paths["config"].write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, paths["state"])
    if intervals is not None and intervals[0]:
        paths["intervals"] = out / INTERVALS_FILE
        np.savez(paths["intervals"], levels=np.asarray(intervals[0]), widths=np.asarray(intervals[1], np.float32))
    return {k: str(v) for k, v in paths.items()}


def read_intervals(path: Path | None, meta: ModelMeta) -> tuple[tuple[float, ...], np.ndarray] | None:
    """The conformal levels and half-widths ``[K, H, N]``, checked against ``meta``; None when not calibrated."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            levels, widths = np.asarray(f["levels"], np.float64), np.asarray(f["widths"], np.float32)
    except (OSError, ValueError, KeyError) as err:
        raise ForecastError(f"{path} could not be read ({err}); the model artifact is damaged.") from None
    shape = (len(levels), meta.horizon, meta.n_vars)
    if levels.ndim != 1 or widths.shape != shape or not ((levels > 0) & (levels < 1)).all() or \
            np.isnan(widths).any() or (widths < 0).any():
        raise ForecastError(f"{path}: levels in (0, 1) and non-negative widths of shape {list(shape)} expected, got "
                            f"{list(widths.shape)}; the model artifact is damaged.")
    return tuple(float(v) for v in levels), widths
