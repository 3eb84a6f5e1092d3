"""MLflow: where runs go, experiments, per-epoch logging and the run's records.

The default store is ``sqlite:///mlflow.db`` in the working directory, with artifacts in ``mlartifacts/``
beside it (never a ``./mlruns`` file store). ``--tracking-uri`` and ``MLFLOW_TRACKING_URI`` override it.

This module imports neither Lightning nor, until a function needs it, MLflow: ``forecast predict`` from a local
model folder reads store URIs through it and never pays for importing MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import forecast
from forecast.errors import ForecastError
from forecast.process import atomic_path, owner

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_DB = "mlflow.db"
_OPENED: set[str] = set()  # local stores this process has opened (created or migrated) already
SQLITE = "sqlite:///"


def sqlite_url(path: str | os.PathLike) -> str:
    """``sqlite:///<absolute path>`` for a database file path (MLflow stores and Optuna storages alike)."""
    return f"{SQLITE}{Path(path).expanduser().resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI, else None (a server, PostgreSQL)."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for tags, tables and printed commands): tracking servers,
    PostgreSQL stores and Optuna storages alike."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = f"{parts.hostname}:{parts.port}" if parts.port else f"{parts.hostname}"
    except ValueError:  # not parseable: it will fail to open anyway
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


# The store schemes MLflow serves as tracking and registry stores (its own list; a plugin's scheme would go here).
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def resolve_uri(uri: str | None = None) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"{SQLITE}{Path.cwd() / DEFAULT_DB}"
    if "://" not in uri:  # a bare path to a sqlite file
        return sqlite_url(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ForecastError(f"--tracking-uri '{safe_url(uri)}' has the scheme '{scheme}', which MLflow does not store "
                            "runs in; use a sqlite file path, sqlite:///path.db, http(s)://host:port or "
                            "postgresql://user@host/db.")
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a local sqlite store keeps artifacts: ``mlartifacts/`` beside the database file."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def checkpoint_root(uri: str) -> Path:
    """Where benchmark cells keep their resumable training state: ``checkpoints/`` beside a local sqlite
    database, else ``~/.cache/forecast/checkpoints``."""
    db = sqlite_path(uri)
    if db is not None:
        return db.resolve().parent / "checkpoints"
    return Path.home() / ".cache" / "forecast" / "checkpoints"


def require_store(uri: str) -> None:
    """A local store that does not exist yet is one line, not an empty UI or table."""
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise ForecastError(f"no MLflow store at {uri}; train a model first (`forecast train ...`, or a benchmark) "
                            "or pass --tracking-uri.")


def quiet_logs() -> None:
    for name in ("alembic", "mlflow", "mlflow.store", "mlflow.tracking", "lightning", "lightning.pytorch",
                 "lightning.fabric", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run at" lines, tracking servers


@contextlib.contextmanager
def creation_lock(uri: str, option: str = "--tracking-uri") -> Iterator[None]:
    """While held, no other process opens the local sqlite database of ``uri`` for the first time.

    MLflow and Optuna create and migrate a new database's tables when it is first opened; two processes doing that
    at once on one file collide (``duplicate column name: step``). An exclusive ``flock`` on ``<db>.lock`` beside
    it serializes the first open; other URIs (servers, PostgreSQL) need no lock and get none."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db = db.expanduser().resolve()
    if not db.parent.is_dir():  # nothing can be created there: the store's own open fails and says so
        yield
        return
    try:
        handle = open(db.with_name(db.name + ".lock"), "a")  # noqa: SIM115 (closed below)
    except OSError as err:  # a folder that takes no files (/proc), a read-only one
        raise ForecastError(f"the store '{uri}' cannot be created in '{db.parent}' ({err.strerror}); give "
                            f"{option} a sqlite path in a folder you can write to.") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``; a new local database is created (tables and migrations) by one process at
    a time, so any number of workers can start together on a file that does not exist yet. It starts as a copy of
    the empty store at this MLflow's schema (:func:`schema_template`) rather than migrating its own."""
    quiet_logs()
    from mlflow.tracking import MlflowClient

    if sqlite_path(uri) is None or uri in _OPENED:
        return MlflowClient(tracking_uri=uri)
    with creation_lock(uri):
        db = sqlite_path(uri).expanduser()
        if db.parent.is_dir() and not db.exists() and (template := schema_template()) is not None:
            with atomic_path(db) as tmp:  # never a half-copied store
                shutil.copyfile(template, tmp)
        mlf = MlflowClient(tracking_uri=uri)
        mlf.search_experiments(max_results=1)  # opens the store: creates or migrates its tables under the lock
    _OPENED.add(uri)  # once per process: later clients need neither the lock nor the query
    return mlf


def schema_template() -> Path | None:
    """An empty local store at this MLflow version's schema: its tables with every migration applied, and no rows
    (MLflow adds the Default experiment, with its artifact location, when it first opens a copy). Made once per
    MLflow version in the cache (``$FORECAST_CACHE_DIR/mlflow/``): MLflow migrates a new database through its
    whole history, about a second per new store, which every new store then skips. None where it cannot be made;
    then MLflow creates the store itself, as before."""
    import mlflow

    from forecast.data.store import cache_dir

    path = cache_dir() / "mlflow" / f"schema-{mlflow.__version__}.db"
    if path.is_file():
        return path
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables  # what MLflow runs on a new database

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # processes racing here each write their own and rename; all are equal
            engine = sqlalchemy.create_engine(f"{SQLITE}{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
    except Exception:  # noqa: BLE001 - a read-only cache, or an MLflow without this function: no template
        return None
    return path


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore the previous URI and environment."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


REQUIREMENT_CHECK = "warn_dependency_requirement_mismatches"  # MLflow's hook, named in the modules that call it
_REQUIREMENT_LOCK = threading.Lock()  # one block at a time: a second would save the first one's no-op for good


@contextlib.contextmanager
def pinned_requirements() -> Iterator[None]:
    """Log a model whose pip requirements are this environment's own pins without MLflow checking them.

    MLflow compares a logged model's requirements with the installed packages, and again when it loads the model
    back to validate the input example; the first comparison maps every installed distribution to its modules,
    about half a second of every run. Requirements pinned from the installed versions (``serving.requirements``)
    cannot mismatch, so the hook is a no-op for the block wherever this MLflow still calls it by that name."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    with _REQUIREMENT_LOCK:
        owners = [m for m in (environment, mlflow.pyfunc) if hasattr(m, REQUIREMENT_CHECK)]
        saved = [getattr(m, REQUIREMENT_CHECK) for m in owners]
        for m in owners:
            setattr(m, REQUIREMENT_CHECK, lambda requirements: None)
        try:
            yield
        finally:
            for m, check in zip(owners, saved):
                setattr(m, REQUIREMENT_CHECK, check)


def experiment_id(mlf: MlflowClient, name: str, uri: str) -> str:
    exp = mlf.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(uri)
    return mlf.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


OWNER_TAG = "owner"  # host:pid of the process that created a run: a later run closes it if that process is gone


def base_tags(dataset: str, model: str, data_sha256: str) -> dict[str, str]:
    tags = {"dataset": dataset, "model": model, "data_sha256": data_sha256, "forecast_version": forecast.__version__,
            OWNER_TAG: owner()}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def params_of(flat: dict[str, Any]) -> dict[str, str]:
    """MLflow params: stringified, None as an empty string, 500 chars at most."""
    return {k: ("" if v is None else str(v))[:500] for k, v in flat.items()}
