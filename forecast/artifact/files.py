"""The model artifact's files: written, found (an MLflow model folder or a plain one) and read back into a
forecaster, every file checked before memory is spent on what it says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from forecast.artifact.meta import ModelMeta
from forecast.config import TrainConfig
from forecast.errors import ForecastError
from forecast.models import ModelContext, build_config, create_model, extras_from_state, get_spec

META_FILE = "forecast_model.json"
STATE_FILE = "model_state.pt"
CONFIG_FILE = "config.yaml"
INTERVALS_FILE = "intervals.npz"


@dataclass
class LoadedModel:
    """A forecaster rebuilt from an artifact, in eval mode on the CPU, with its metadata and config."""

    meta: ModelMeta
    model: torch.nn.Module
    config: dict[str, Any]
    source: str = ""
    intervals: tuple[tuple[float, ...], np.ndarray] | None = None  # conformal levels, half-widths [K, H, N]

    @property
    def quantiles(self) -> tuple[float, ...]:
        """The levels a quantile-trained model forecasts (its point forecast is the 0.5 one); () otherwise."""
        return getattr(self.model, "levels", ())

    @torch.no_grad()
    def forward_scaled(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None,
                       full: bool = False, future: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, L, N]`` standardized (targets, past covariates), ``future [B, L+H, F]`` -> ``[B, H, N_t]``
        standardized (a quantile model's median; ``full``: all its levels, ``[B, H, N_t, Q]``)."""
        pred = self.model(x, x_mark, y_mark, future)
        return pred if full or pred.dim() == 3 else pred[..., self.quantiles.index(0.5)]


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
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    quantiles = TrainConfig(loss=str(train.get("loss", "mse")), quantiles=train.get("quantiles", (0.1, 0.5, 0.9))
                            ).model_quantiles if train.get("loss") == "quantile" else ()

    def build(device: str) -> torch.nn.Module:
        ctx = ModelContext(seq_len=meta.seq_len, horizon=meta.horizon, n_vars=meta.n_inputs, n_marks=meta.n_marks,
                           n_targets=meta.n_targets, n_future=meta.n_future, univariate=meta.features == "S",
                           extras={k: v.to(device) for k, v in extras.items()})
        with torch.device(device):
            return create_model(meta.model_name, model_cfg, ctx, quantiles)

    # First a skeleton that allocates nothing: the description must fit the weights before memory is spent on it.
    _check_shapes(build("meta").state_dict(), state, meta)
    try:
        model = build("cpu")
    except ValueError as err:  # the model refuses what the weights hold (OrthoTrans: a basis that is not orthogonal)
        raise ForecastError(f"the saved weights do not build a {meta.model_name}: {err}; the artifact's files were "
                            "edited or are damaged, log the model again.") from None
    model.load_state_dict(state, strict=True)
    _check_levels(getattr(model, "levels", ()), state.get("quantiles"))
    return model.eval()


def _check_levels(levels: tuple[float, ...], saved: torch.Tensor | None) -> None:
    """The config's quantile levels are those the weights were trained for (saved with them, in their dtype)."""
    if levels and saved is not None and not torch.equal(torch.tensor(levels).to(saved.dtype), saved):
        raise ForecastError(f"the config gives quantile levels {', '.join(f'{q:g}' for q in levels)} but the weights "
                            f"were trained for {', '.join(f'{q:.6g}' for q in saved.tolist())}; the artifact's "
                            "config.yaml was edited, log the model again.")


def _check_shapes(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], meta: ModelMeta) -> None:
    what = (f"a {meta.model_name} with L={meta.seq_len}, H={meta.horizon}, {meta.n_vars} columns and {meta.n_marks} "
            "time features" + (f" ({meta.n_targets} targets, {meta.n_future} future covariates)"
                               if meta.targets is not None else ""))
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
    shape = (len(levels), meta.horizon, meta.n_targets)
    if levels.ndim != 1 or widths.shape != shape or not ((levels > 0) & (levels < 1)).all() or \
            np.isnan(widths).any() or (widths < 0).any():
        raise ForecastError(f"{path}: levels in (0, 1) and non-negative widths of shape {list(shape)} expected, got "
                            f"{list(widths.shape)}; the model artifact is damaged.")
    return tuple(float(v) for v in levels), widths
