"""Keeping a model current: ``forecast train --init-from MODEL -d new.csv`` goes on from a logged model.

The new run starts from the parent's weights, config and data-derived bases (OrthoTrans ``Q``, a season), and,
unless ``--refit-scaler``, its scaler; the data must have the parent's columns (any order; they are put in the
parent's) and frequency. Before training, the parent is scored on the new run's validation windows
(:func:`parent_val_loss`), so "better than the parent" compares the two models on the same windows and the same
scale; ``forecast train --register`` promotes the new model only then (or with ``--force``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import torch

from forecast import tracking
from forecast.artifact import LoadedModel
from forecast.config import RunConfig
from forecast.data.series import Series
from forecast.errors import ForecastError
from forecast.inference.predict import load_model

# Keys that say where and which data a run reads: the new run's own, never inherited from the parent.
NOT_INHERITED = ("data.dataset", "data.data_dir", "data.split", "data.num_workers")
# Keys that shape the network (its inputs, outputs and weights), besides every model.* key a model's shapes read:
# a fine-tuning run keeps the parent's.
NETWORK_KEYS = ("data.seq_len", "data.horizon", "data.features", "data.target", "data.past_covariates",
                "data.future_covariates", "data.time_features", "data.mark_freq")
FIX = "fine-tune with training flags only (--epochs, --lr, --batch-size, --set train.patience=...), or train afresh " \
      "without --init-from to change it"


@dataclasses.dataclass(frozen=True)
class Parent:
    """The model a fine-tuning run starts from."""

    source: str  # as the user gave it: models:/NAME@alias, runs:/ID/model or a folder
    run_id: str | None  # the run that logged it, when the store knows it
    model: LoadedModel

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.model.state_dict().items()}


def load_parent(source: str, tracking_uri: str | None) -> Parent:
    """The parent model (checked like any model ``forecast predict`` loads) and the run that logged it."""
    try:
        model = load_model(source, tracking_uri)
    except ForecastError as err:
        raise ForecastError(f"--init-from: {err}") from None
    return Parent(source, _run_id(source, tracking_uri), model)


def _run_id(source: str, tracking_uri: str | None) -> str | None:
    found = re.match(r"runs:/([0-9a-f]+)/", source)
    if found:
        return found.group(1)
    named = re.match(r"models:/([^/@]+)@(.+)$", source)
    if named:
        import mlflow

        uri = tracking.resolve_uri(tracking_uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            return client.get_model_version_by_alias(named.group(1), named.group(2)).run_id
        except Exception:  # noqa: BLE001 (the model loaded; lineage is a nicety)
            return None
    return None


def inherited(parent: Parent) -> dict[str, Any]:
    """The parent's config as ``section.key`` overrides, for the keys a new run inherits."""
    out = {}
    for section in ("data", "model", "train"):
        for key, value in (parent.model.config.get(section) or {}).items():
            if f"{section}.{key}" not in NOT_INHERITED:
                out[f"{section}.{key}"] = value
    return out


def _levels(train: dict[str, Any]) -> tuple[float, ...]:
    return tuple(train.get("quantiles") or ()) if train.get("loss") == "quantile" else ()


def _same(a: Any, b: Any) -> bool:
    return (list(a) if isinstance(a, (list, tuple)) else a) == (list(b) if isinstance(b, (list, tuple)) else b)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) or "none" if isinstance(value, (list, tuple)) else str(value)


def check_network(parent: Parent, cfg: RunConfig) -> None:
    """One line, before any data is read, for a flag or ``--set`` that changes the parent's network (its lookback,
    horizon, roles, time marks or quantile levels), which the parent's weights would not fit."""
    theirs = parent.model.config
    flat = cfg.flat()
    for key in NETWORK_KEYS:
        section, name = key.split(".")
        if name in (theirs.get(section) or {}) and not _same(theirs[section][name], flat[key]):
            raise ForecastError(f"--init-from keeps the parent's network: {key} is {_show(theirs[section][name])} "
                                f"there and {_show(flat[key])} here; {FIX}.")
    mine, own = cfg.train.model_quantiles, _levels(theirs.get("train") or {})
    if not _same(mine, own):
        what = lambda q: f"quantile levels {', '.join(f'{x:g}' for x in q)}" if q else "a point forecast"  # noqa: E731
        raise ForecastError(f"--init-from keeps the parent's network: it was trained for {what(own)}, these settings "
                            f"ask for {what(mine)}; {FIX}.")


def weights_do_not_fit(parent: Parent, cfg: RunConfig) -> ForecastError:
    """The line for a parent whose weights do not load into the network ``cfg`` builds: the model keys set apart."""
    theirs = parent.model.config.get("model") or {}
    changed = [f"model.{k} {_show(v)} there, {_show(getattr(cfg.model, k))} here" for k, v in theirs.items()
               if hasattr(cfg.model, k) and not _same(v, getattr(cfg.model, k))]
    return ForecastError(f"--init-from keeps the parent's network, and its weights do not fit the one these settings "
                         f"build ({'; '.join(changed) or 'another shape'}); {FIX}.")


def adapt_series(series: Series, parent: Parent, refit_scaler: bool) -> Series:
    """``series`` with the parent's columns in the parent's order and, unless ``refit_scaler``, its scaler."""
    meta = parent.model.meta
    if set(series.columns) != set(meta.columns):
        missing = [c for c in meta.columns if c not in series.columns]
        extra = [c for c in series.columns if c not in meta.columns]
        what = "; ".join(([f"lacks {', '.join(missing[:5])}"] if missing else []) +
                         ([f"has {', '.join(extra[:5])}, which the parent does not"] if extra else []))
        raise ForecastError(f"--init-from: {series.source} {what} (the parent's columns: {', '.join(meta.columns[:8])}"
                            f"{', ...' if len(meta.columns) > 8 else ''}); fine-tune on data with the same columns.")
    if series.freq != meta.freq:
        raise ForecastError(f"--init-from: {series.source} is at frequency {series.freq}, the parent at {meta.freq}; "
                            "fine-tune on data of the parent's frequency.")
    order = [series.columns.index(c) for c in meta.columns]
    mean, std = (series.mean[order], series.std[order]) if refit_scaler else (
        np.asarray(meta.mean, dtype=np.float64), np.asarray(meta.std, dtype=np.float64))
    return dataclasses.replace(series, raw=series.raw[:, order], columns=list(meta.columns), mean=mean, std=std)


@torch.no_grad()
def parent_val_loss(parent: Parent, windows: Any, mean: np.ndarray, std: np.ndarray, loss_fn: Any,
                    batch_size: int = 256) -> float:
    """The parent's loss on ``windows`` (a WindowDataset, standardized with ``mean``/``std``) in that same scale:
    its inputs and forecasts are moved through original units when its own scaler differs."""
    meta = parent.model.meta
    own_mean = torch.as_tensor(np.asarray(meta.mean), dtype=torch.float32)
    own_std = torch.as_tensor(np.asarray(meta.std), dtype=torch.float32)
    run_mean, run_std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def rescale(v: torch.Tensor, cols: slice, into_own: bool) -> torch.Tensor:
        """``v [..., n]`` of the columns ``cols`` from the run's scale into the parent's (or back)."""
        (m0, s0), (m1, s1) = ((run_mean, run_std), (own_mean, own_std))[::1 if into_own else -1]
        return (v * s0[cols] + m0[cols] - m1[cols]) / s1[cols]

    k, n_t, n_f = meta.n_inputs, meta.n_targets, len(meta.future_columns)
    total, count = 0.0, 0
    for batch in windows.in_order(batch_size):
        future = batch.get("future")
        if future is not None and n_f:  # the covariate columns move scale; the calendar stays as it is
            future = torch.cat([rescale(future[..., :n_f], slice(k, k + n_f), True), future[..., n_f:]], dim=-1)
        pred = parent.model.forward_scaled(rescale(batch["x"], slice(0, k), True), batch.get("x_mark"),
                                           batch.get("y_mark"), full=True, future=future)
        if pred.dim() == 4:  # a quantile model's levels come last
            pred = rescale(pred.movedim(-1, 0), slice(0, n_t), False).movedim(0, -1)
        else:
            pred = rescale(pred, slice(0, n_t), False)
        n = batch["x"].shape[0]
        total += float(loss_fn(pred, batch["y"])) * n
        count += n
    return total / count
