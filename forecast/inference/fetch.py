"""Where a model comes from: a local folder as is, or an MLflow URI fetched once and then kept.

A ``runs:/RUN_ID/PATH`` model is downloaded into ``<cache>/models/<store digest>/<RUN_ID>/<PATH>`` with a
``manifest.json`` of each file's sha256. Later calls use that copy without asking MLflow (and without importing
it), after checking every file against the manifest: a copy that was edited or cut short is fetched again. A
run's logged model does not change, so the run id is its key; ``models:/NAME@alias`` moves, so it is resolved
through the registry each time and downloaded to a temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from forecast import tracking
from forecast.config import digest
from forecast.data.store import cache_dir
from forecast.errors import ForecastError

MANIFEST = "manifest.json"
RUN_URI = re.compile(r"^runs:/([0-9a-f]{32})/([A-Za-z0-9_./-]+)$")


def is_remote_uri(model_uri: str) -> bool:
    return "://" in model_uri or model_uri.startswith(("runs:/", "models:/"))


@contextlib.contextmanager
def model_dir(model_uri: str, tracking_uri: str | None = None) -> Iterator[Path]:
    """Yields the model's local folder: a local folder as is, an MLflow URI downloaded to a temp dir."""
    path = Path(model_uri).expanduser()
    if path.exists():
        yield path
        return
    if not is_remote_uri(model_uri):
        raise ForecastError(f"model '{model_uri}' not found; give runs:/RUN_ID/model, models:/NAME@ALIAS "
                            "or the path of a model folder.")
    uri = tracking.resolve_uri(tracking_uri)
    cached = _cached(model_uri, uri)
    if cached is not None and _intact(cached):
        yield cached
        return
    tracking.quiet_logs()
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="forecast-model-") as tmp:
        try:
            # runs:/ID/model resolves to the run's logged model through the fluent store, so point it at uri too.
            with tracking.fluent_store(uri):
                local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp, tracking_uri=uri,
                                                            registry_uri=uri)
        except (MlflowException, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise ForecastError(f"model '{model_uri}' could not be fetched from {uri} ({first}); check the run id "
                                "or name@alias with `forecast runs`, and --tracking-uri.") from None
        if cached is not None:  # keep it for the next call: moved into place whole, with its manifest
            yield _keep(Path(local), cached)
            return
        yield Path(local)


def _cached(model_uri: str, uri: str) -> Path | None:
    """Where a ``runs:/`` model of store ``uri`` is kept; None for other URIs."""
    found = RUN_URI.match(model_uri)
    if found is None or ".." in found.group(2).split("/"):
        return None
    return cache_dir() / "models" / digest(tracking.safe_url(uri)) / found.group(1) / found.group(2).strip("/")


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _intact(path: Path) -> bool:
    """Whether the kept copy at ``path`` is every file of its manifest, unchanged."""
    try:
        recorded = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and recorded == _files(path)


def _keep(local: Path, dest: Path) -> Path:
    """Move a fresh download to ``dest`` with its manifest (copied beside it, then renamed into place whole); the
    download itself when the cache cannot be written."""
    staging = None
    try:
        (local / MANIFEST).write_text(json.dumps(_files(local), indent=1))
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        shutil.copytree(local, staging, dirs_exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)  # a copy that failed its check
        os.replace(staging, dest)
        return dest
    except OSError:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return local
