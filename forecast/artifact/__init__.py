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

from forecast.artifact.files import (
    CONFIG_FILE,
    INTERVALS_FILE,
    META_FILE,
    STATE_FILE,
    LoadedModel,
    artifact_paths,
    build_model,
    load,
    read_intervals,
    read_meta,
    write,
)
from forecast.artifact.meta import DATE_COL, MAX_MARKS, MAX_STEPS, MAX_VARS, META_FORMAT, ModelMeta, model_meta

__all__ = ["CONFIG_FILE", "DATE_COL", "INTERVALS_FILE", "MAX_MARKS", "MAX_STEPS", "MAX_VARS", "META_FILE",
           "META_FORMAT", "STATE_FILE", "LoadedModel", "ModelMeta", "artifact_paths", "build_model", "load",
           "model_meta", "read_intervals", "read_meta", "write"]
