"""Search spaces: ``search_space`` of configs/<model>.yaml (and a user's YAML) checked once, then sampled."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna

from forecast.config import DataConfig, RunConfig, TrainConfig
from forecast.errors import ForecastError, unknown_key
from forecast.models import get_spec
from forecast.resolve import resolve


SPACE_TYPES = ("float", "int", "categorical")


def _section_fields(model_name: str) -> dict[str, dict[str, Any]]:
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
            raise unknown_key("search-space parameter", name, fields[section],
                              f"Valid {section} keys: {', '.join(sorted(fields[section]))}.", prefix=f"{section}.",
                              where=f" for model '{model_name}'")
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


def distribution(spec: dict[str, Any]) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution :func:`suggest` samples a normalized parameter from."""
    if spec["type"] == "categorical":
        return optuna.distributions.CategoricalDistribution(spec["choices"])
    if spec["type"] == "int":
        return optuna.distributions.IntDistribution(spec["low"], spec["high"], log=spec["log"],
                                                    step=spec.get("step", 1))
    return optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=spec["log"], step=spec.get("step"))


def check_space_fits(study: optuna.Study, space: dict[str, dict[str, Any]]) -> None:
    """One line, before any trial, for a parameter the study's trials drew from another set of choices or another
    kind of range: Optuna would fail every new trial with it (new bounds of a range are fine)."""
    seen: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        seen.update((k, d) for k, d in trial.distributions.items() if k in space and k not in seen)
    for key, old in seen.items():
        new = distribution(space[key])
        try:
            optuna.distributions.check_distribution_compatibility(old, new)
        except ValueError:
            was, now = (f"choices {list(d.choices)}" if isinstance(d, optuna.distributions.CategoricalDistribution)
                        else f"an {'integer' if isinstance(d, optuna.distributions.IntDistribution) else 'float'} range"
                        for d in (old, new))
            raise ForecastError(f"study '{study.study_name}' drew {key} from {was}, and this search space gives {now}, "
                                "which Optuna cannot mix into one study; keep the study's, or pass another "
                                "--study-name.") from None


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


def tune_space(cfg: RunConfig, overrides: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The normalized search space of ``cfg``, without the keys the user fixed with a flag or ``--set``."""
    space = normalize_space(cfg.search_space, cfg.model_name)
    if not space:
        raise ForecastError(f"{cfg.model_name} has no search space (configs/{cfg.model_name}.yaml): nothing to tune; "
                            f"train it once with `forecast train -m {cfg.model_name}`.")
    if cfg.data.features != "MS":  # no covariates, so their lr cannot matter
        space.pop("train.covariate_lr", None)
    fixed = [k for k in space if k in overrides]
    for key in fixed:
        del space[key]
    return space, fixed
