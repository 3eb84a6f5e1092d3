"""Finding benchmark files: a user's data dir, then the cache, then a verified download.

Search order for a benchmark file (``NAME.csv`` or ``NAME.csv.gz``):
1. ``--data-dir`` (``data.data_dir``), 2. ``$FORECAST_DATA_DIR``, 3. the cache: ``$FORECAST_CACHE_DIR``, else
``datasets/`` in the source checkout, else ``~/.cache/forecast/datasets``.
A missing file is downloaded into the cache with a progress bar, checked against its sha256 and moved into
place atomically; a mismatch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from forecast.data.catalogue import DatasetInfo
from forecast.data.loading import read_bytes
from forecast.errors import ForecastError

_CHECKOUT_DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def cache_dir() -> Path:
    env = os.environ.get("FORECAST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if _CHECKOUT_DATASETS.is_dir() and os.access(_CHECKOUT_DATASETS, os.W_OK):
        return _CHECKOUT_DATASETS
    return Path.home() / ".cache" / "forecast" / "datasets"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where benchmark files are looked for: ``--data-dir`` (which must exist), $FORECAST_DATA_DIR, the cache."""
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise ForecastError(f"--data-dir '{data_dir}' is not a folder; give the folder that holds the benchmark "
                            "files, or leave it out.")
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get("FORECAST_DATA_DIR")) if d]
    return [*dirs, cache_dir()]


def find_local(info: DatasetInfo, data_dir: str | os.PathLike | None = None) -> Path | None:
    for d in search_dirs(data_dir):
        for candidate in (d / info.filename, d / f"{info.filename}.gz"):
            if candidate.is_file():
                return candidate
    return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(
    info: DatasetInfo,
    dest_dir: Path,
    progress: bool = True,
    opener: Callable[[str], object] = urllib.request.urlopen,
) -> Path:
    """Download ``info.url`` into ``dest_dir/info.filename``, verify its sha256, move it into place atomically."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / info.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        try:
            response = opener(info.url)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ForecastError(
                f"dataset '{info.name}' is not available locally and the download from {info.url} failed "
                f"({reason}); put {info.filename} (or {info.filename}.gz) into {dest_dir} "
                f"or point FORECAST_DATA_DIR / --data-dir at a folder that holds it."
            ) from None
        total = int(getattr(response, "headers", {}).get("Content-Length") or 0) or None
        with os.fdopen(fd, "wb") as out, _progress(info.name, total, progress) as advance:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        got = digest.hexdigest()
        if not info.accepts(got):
            raise ForecastError(
                f"checksum mismatch for {info.filename} downloaded from {info.url}: expected sha256 "
                f"{_expected(info)}, got {got[:12]}…; nothing was saved. Retry later, or place a verified copy "
                f"in {dest_dir}."
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _expected(info: DatasetInfo) -> str:
    return " or ".join(f"{d[:12]}…" for d in info.sha256)


class _progress:
    """A rich progress bar for a download, or nothing."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.enabled, self.name, self.total = enabled, name, total

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self._bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True)
        self._bar.start()
        task = self._bar.add_task(f"downloading {self.name}", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()


def fetch(info: DatasetInfo, data_dir: str | os.PathLike | None = None, progress: bool = True) -> tuple[bytes, str, Path]:
    """The benchmark's uncompressed bytes, their sha256 and the file they came from (downloading if needed)."""
    path = find_local(info, data_dir) or download(info, cache_dir(), progress=progress)
    data = read_bytes(path)
    digest = sha256_bytes(data)
    if not info.accepts(digest):
        raise ForecastError(
            f"checksum mismatch for {path}: expected sha256 {_expected(info)}, got {digest[:12]}…; "
            f"delete it so it is downloaded again, or train on it as your own file with --dataset {path}."
        )
    return data, digest, path
