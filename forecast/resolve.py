"""Resolving a run's whole config, once: configs/<model>.yaml, a user's YAML and the CLI's flags and ``--set``.

Precedence (later wins): dataclass defaults < configs/<model>.yaml ``defaults`` <
``datasets.<name>`` < ``datasets.<name>.horizons.<H>`` < a user's ``--config`` YAML < ``--set`` / flags.
Keys are ``section.key`` with section one of ``data``, ``model``, ``train``. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from forecast.config import CONFIG_DIR, SECTIONS, DataConfig, RunConfig, TrainConfig, build_section
from forecast.data.catalogue import dataset_name, default_horizon, find
from forecast.data.orthobasis import extra_shape
from forecast.data.timefeatures import freq_family
from forecast.errors import ForecastError
from forecast.models import ModelContext, build_config, create_model, get_spec


def _merge(dst: dict[str, dict[str, Any]], layer: dict[str, Any] | None, where: str) -> None:
    for section, values in (layer or {}).items():
        if section == "horizons":
            continue
        if section not in SECTIONS:
            raise ForecastError(f"unknown config section '{section}' in {where}; use data, model or train.")
        if not isinstance(values, dict):
            raise ForecastError(f"config section '{section}' in {where} must be a mapping.")
        dst[section].update(values)


def load_model_yaml(model_name: str) -> dict[str, Any]:
    spec = get_spec(model_name)
    path = CONFIG_DIR / f"{spec.name}.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def _dataset_key(dataset: str, layers: dict[str, Any]) -> str | None:
    for name in layers:
        if name.lower() == dataset.lower():
            return name
    return None


def resolve(
    model_name: str,
    dataset: str,
    overrides: dict[str, Any] | None = None,
    user_yaml: str | Path | None = None,
) -> RunConfig:
    """Resolve the full config for (model, dataset) from configs/, a user YAML and flat overrides.

    ``overrides`` maps ``section.key`` to values (``--set`` and the named CLI flags).
    """
    spec = get_spec(model_name)
    doc = load_model_yaml(spec.name)
    layers: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    _merge(layers, doc.get("defaults"), f"configs/{spec.name}.yaml")
    overrides = dict(overrides or {})
    user_doc: dict[str, Any] = {}
    if user_yaml is not None:
        path = Path(user_yaml)
        if not path.exists():
            raise ForecastError(f"config file '{path}' not found; pass an existing YAML file to --config.")
        try:
            user_doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ForecastError(f"config file '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
    # The horizon decides which per-horizon layer applies, so find it first.
    horizon = overrides.get("data.horizon", (user_doc.get("data") or {}).get("horizon"))
    ds_layers = doc.get("datasets") or {}
    key = _dataset_key(dataset_name(dataset), ds_layers)
    ds_doc = ds_layers.get(key) if key else None
    if ds_doc:
        _merge(layers, ds_doc, f"configs/{spec.name}.yaml datasets.{key}")
    h = int(horizon if horizon is not None else
            layers["data"].get("horizon", default_horizon(dataset) or DataConfig.horizon))
    layers["data"]["horizon"] = h  # a flag or the user's YAML set it again below
    for hdoc in (doc.get("horizons") or {}, (ds_doc or {}).get("horizons") or {}):
        if h in hdoc or str(h) in hdoc:
            _merge(layers, hdoc.get(h, hdoc.get(str(h))), f"configs/{spec.name}.yaml horizons.{h}")
    search_space = dict(doc.get("search_space") or {})
    if user_doc:
        search_space.update(user_doc.pop("search_space", None) or {})
        _merge(layers, user_doc, str(user_yaml))
    for dotted, value in overrides.items():
        section, _, name = dotted.partition(".")
        if section not in layers or not name:
            raise ForecastError(
                f"unknown config key '{dotted}'; keys look like data.seq_len, model.<field> or train.lr."
            )
        layers[section][name] = value
    layers["data"]["dataset"] = dataset
    _drop_native_mark_freq(layers["data"], dataset)
    cfg = RunConfig(
        model_name=spec.name,
        data=build_section(DataConfig, layers["data"], "data"),
        model=build_config(spec.name, layers["model"]),
        train=build_section(TrainConfig, layers["train"], "train"),
        search_space=search_space,
    )
    _check_buildable(cfg)
    return cfg


def _check_buildable(cfg: RunConfig) -> None:
    """Build the model once on the meta device (nothing is allocated) at the run's L and H, so a value that only
    its constructor rejects (DLinear's ``kernel_size=0``) is one line now, before any data is loaded."""
    L, H = cfg.data.seq_len, cfg.data.horizon
    names = get_spec(cfg.model_name).extras(cfg.model)
    extras = {n: torch.empty(extra_shape(n, L, H), device="meta") for n in names}
    try:
        with torch.device("meta"):
            create_model(cfg.model_name, cfg.model, ModelContext(seq_len=L, horizon=H, n_vars=2, n_marks=4,
                                                                 extras=extras), cfg.train.model_quantiles)
    except (ValueError, TypeError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ForecastError(f"invalid model config for '{cfg.model_name}': {first}.") from None


def _drop_native_mark_freq(data: dict[str, Any], dataset: str) -> None:
    """``mark_freq`` equal to a benchmark's own step family means the default (None): the same marks, the same
    config, the same benchmark config hash as before the key existed (ETTh1 with "h")."""
    mark_freq = data.get("mark_freq")
    info = find(dataset)
    if mark_freq is None:
        return
    try:
        same = info is not None and freq_family(str(mark_freq)) == freq_family(info.freq)
    except ValueError:
        return  # not a frequency: DataConfig says so in one line
    if same:
        data["mark_freq"] = None
