"""The model artifact's format, its one owner: what a saved forecaster is made of, written and read here only.

A model artifact (the ``model`` of every ``forecast train`` run, an MLflow pyfunc; see
:mod:`forecast.inference.serving`) holds:

- ``model_state.pt``: the state dict, loaded with ``torch.load(weights_only=True)``; data-derived tensors such
  as OrthoTrans ``q_in``/``q_out`` are buffers in it (artifacts of 0.1.0 also carry ``orthotrans_q.npz``, a copy
  that is never read);
- ``config.yaml``: the resolved run config (``RunConfig.to_dict()``);
- ``forecast_model.json``: the :class:`ModelMeta`: columns in order, scaler mean/std, frequency, L, H,
  the model name, the number of time-feature channels and the package version.

Nothing is pickled. Rebuilding needs the ``forecast`` package, never the training data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import forecast
from forecast.errors import ForecastError
from forecast.models import ModelContext, build_config, create_model, extras_from_state, get_spec

META_FILE = "forecast_model.json"
STATE_FILE = "model_state.pt"
CONFIG_FILE = "config.yaml"
META_FORMAT = 1
DATE_COL = "date"


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
    def from_dict(cls, doc: dict[str, Any], where: str) -> ModelMeta:
        try:
            meta = cls(**doc)
        except TypeError as err:
            raise ForecastError(f"{where} is not a forecast model description ({err}).") from None
        if meta.format > META_FORMAT:
            raise ForecastError(f"{where} has format {meta.format}, newer than this forecast "
                                f"understands ({META_FORMAT}); upgrade forecast.")
        if not (len(meta.columns) == len(meta.mean) == len(meta.std)):
            raise ForecastError(f"{where}: columns, mean and std differ in length; the artifact is damaged.")
        return meta

    @property
    def n_vars(self) -> int:
        return len(self.columns)

    def check_horizon(self, horizon: int | None) -> int:
        """The steps to keep: ``horizon`` (the user's ``--horizon``), at most H; None means H."""
        if horizon is None:
            return self.horizon
        if not 1 <= horizon <= self.horizon:
            raise ForecastError(f"--horizon {horizon} is outside 1..{self.horizon}; the model forecasts "
                                f"H={self.horizon} steps, so ask for at most that many.")
        return horizon


@dataclass
class LoadedModel:
    """A forecaster rebuilt from an artifact, in eval mode on the CPU, with its metadata and config."""

    meta: ModelMeta
    model: torch.nn.Module
    config: dict[str, Any]
    source: str = ""

    @torch.no_grad()
    def forward_scaled(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        """``x [B, L, N]`` standardized -> ``[B, H, N]`` standardized."""
        return self.model(x, x_mark, y_mark)


def artifact_paths(model_dir: Path) -> dict[str, Path]:
    """``{name: path}`` of a model's files: an MLflow model directory (MLmodel) or a plain folder of them."""
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        doc = yaml.safe_load(mlmodel.read_text()) or {}
        arts = ((doc.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
        paths = {name: model_dir / spec["path"] for name, spec in arts.items() if isinstance(spec, dict)}
        if "meta" in paths:
            return paths
    if (model_dir / META_FILE).is_file():
        names = {"meta": META_FILE, "state": STATE_FILE, "config": CONFIG_FILE}
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
    model_cfg = build_config(meta.model_name, config.get("model") or {})
    extras = extras_from_state(get_spec(meta.model_name).extras(model_cfg), state)
    ctx = ModelContext(seq_len=meta.seq_len, horizon=meta.horizon, n_vars=meta.n_vars, n_marks=meta.n_marks,
                       extras=extras)
    model = create_model(meta.model_name, model_cfg, ctx)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ForecastError(f"the saved weights do not fit a {meta.model_name} model ({first}); "
                            "the artifact was made by an incompatible forecast version.") from None
    return model.eval()


def load(paths: dict[str, Path], source: str = "") -> LoadedModel:
    """Rebuild a :class:`LoadedModel` from an artifact's files (what the pyfunc's ``load_context`` calls)."""
    meta = read_meta(paths)
    for key in ("state", "config"):
        if key not in paths or not paths[key].is_file():
            raise ForecastError(f"the model artifact {source or paths['meta'].parent} has no {key} file; "
                                "it is incomplete.")
    config = yaml.safe_load(paths["config"].read_text()) or {}
    state = torch.load(paths["state"], map_location="cpu", weights_only=True)
    return LoadedModel(meta, build_model(meta, config, state), config, source)


def model_meta(model_name: str, seq_len: int, horizon: int, columns: list[str], mean: np.ndarray, std: np.ndarray,
               freq: str, n_marks: int, mark_freq: str | None = None) -> ModelMeta:
    return ModelMeta(model_name=model_name, seq_len=seq_len, horizon=horizon, columns=list(columns),
                     mean=[float(v) for v in mean], std=[float(v) for v in std], freq=freq, n_marks=n_marks,
                     forecast_version=forecast.__version__, mark_freq=mark_freq)


def write(out: Path, meta: ModelMeta, config: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write the model's files into ``out``; returns ``{artifact name: path}`` for the pyfunc's ``artifacts``.

    Each thing once: the data-derived tensors (OrthoTrans Q) are buffers in the state dict, nowhere else."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"meta": out / META_FILE, "config": out / CONFIG_FILE, "state": out / STATE_FILE}
    paths["meta"].write_text(meta.to_json())
    paths["config"].write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, paths["state"])
    return {k: str(v) for k, v in paths.items()}
