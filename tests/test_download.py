"""Download path against a local http.server on 127.0.0.1: a good file lands, a bad checksum leaves nothing."""

import dataclasses
import functools
import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest

from forecast.data.catalogue import DatasetInfo, lookup
from forecast.data.store import download, fetch
from forecast.errors import ForecastError


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "tiny.csv").write_text("date,a\n2020-01-01 00:00:00,1\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def _info(url: str, sha: str | None) -> DatasetInfo:
    return DatasetInfo("Tiny", "tiny.csv", url, (sha,) if sha else (), "h", 1, 1, "ratio")


def test_good_download_lands_atomically(server, tmp_path: Path) -> None:
    base, root = server
    sha = hashlib.sha256((root / "tiny.csv").read_bytes()).hexdigest()
    dest = tmp_path / "cache"
    path = download(_info(f"{base}/tiny.csv", sha), dest, progress=False)
    assert path == dest / "tiny.csv"
    assert path.read_bytes() == (root / "tiny.csv").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["tiny.csv"]  # no temp file left


def test_checksum_mismatch_leaves_nothing(server, tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "cache"
    with pytest.raises(ForecastError, match="checksum mismatch"):
        download(_info(f"{base}/tiny.csv", "0" * 64), dest, progress=False)
    assert list(dest.iterdir()) == []


def test_offline_says_which_file_to_put_where(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(ForecastError, match=r"put tiny.csv \(or tiny.csv.gz\) into .*cache"):
        download(_info(f"{base}/missing.csv", None), tmp_path / "cache", progress=False)


def test_fetch_finds_gz_in_data_dir_and_verifies(real_data_dir: Path) -> None:
    data, digest, path = fetch(lookup("ETTh1"), real_data_dir, progress=False)
    assert path.name == "ETTh1.csv.gz" and digest in lookup("ETTh1").sha256
    assert data.startswith(b"date,")


def test_local_file_with_wrong_checksum_is_an_error(tmp_path: Path, real_data_dir: Path, monkeypatch) -> None:
    (tmp_path / "ETTh1.csv").write_text("date,a\n2020-01-01,1\n")
    with pytest.raises(ForecastError, match="checksum mismatch"):
        fetch(lookup("ETTh1"), tmp_path, progress=False)
    info = dataclasses.replace(lookup("ETTh1"), sha256=())
    assert fetch(info, tmp_path, progress=False)[2] == tmp_path / "ETTh1.csv"


def test_every_benchmark_has_a_pinned_digest_and_a_fixed_revision(shipped_catalogue: dict) -> None:
    for info in shipped_catalogue.values():
        assert info.sha256 and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in info.sha256), info.name
        assert "/main/" not in info.url and re.search(r"/[0-9a-f]{40}/", info.url), info.url


@pytest.mark.parametrize("name", ["Exchange", "ILI"])
def test_the_crlf_copy_the_hub_serves_is_accepted_and_reads_the_same(name, real_data_dir, tmp_path) -> None:
    """TSLib's Hub copies of Exchange and ILI are the same rows with CRLF line endings (and another digest)."""
    from forecast.data.loading import read_frame

    info = lookup(name)
    lf, _, _ = fetch(info, real_data_dir, progress=False)
    (tmp_path / info.filename).write_bytes(lf.replace(b"\n", b"\r\n"))
    crlf, digest, _ = fetch(info, tmp_path, progress=False)
    assert digest in info.sha256 and digest != hashlib.sha256(lf).hexdigest()
    assert read_frame(crlf, info.filename, benchmark=True).equals(read_frame(lf, info.filename, benchmark=True))
