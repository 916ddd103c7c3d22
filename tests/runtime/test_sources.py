"""HTTP(S) downloads: verified against #sha256=, refused on mismatch, cached by digest."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import httpx
import pytest
from berth_runtime import sources
from berth_runtime.errors import ModelLoadError
from httpfiles import serve_dir
from runtime_helpers import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "model").mkdir(parents=True)
    (root / "model" / "berth.json").write_text("{}")
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(root / "model", arcname="model")
    return root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verified_unpacked_and_cached(tmp_path: Path, site: Path) -> None:
    cache = tmp_path / "cache"
    want = digest(site / "model.tar.gz")
    with serve_dir(site) as base:
        root = sources.resolve(f"{base}/model.tar.gz#sha256={want}", cache, tmp_path)
        assert (root / "berth.json").read_text() == "{}"
        url = f"{base}/model.tar.gz#sha256={want}"
    # The server is gone: a second resolve must come from the digest cache.
    assert sources.resolve(url, cache, tmp_path) == root
    assert (cache / "blobs" / want / "model.tar.gz").is_file()


def test_digest_mismatch_refused_and_not_cached(tmp_path: Path, site: Path) -> None:
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with serve_dir(site) as base, pytest.raises(ModelLoadError, match="sha256 mismatch"):
        sources.resolve(f"{base}/model.tar.gz#sha256={wrong}", cache, tmp_path)
    assert list((cache / "blobs" / wrong).iterdir()) == []
    assert not (cache / "unpacked").exists()


def test_http_error_reported(tmp_path: Path, site: Path) -> None:
    with serve_dir(site) as base, pytest.raises(ModelLoadError, match="404"):
        sources.resolve(f"{base}/missing.tar.gz#sha256={'a' * 64}", tmp_path / "c", tmp_path)


def test_http_archive_with_allowed_factory_serves(slow_server: Server) -> None:
    # The fleet's slow model: a .tar.gz over HTTP pinned by digest, safetensors weights and
    # a factory given on the command line under --factory-allow.
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    r = httpx.post(f"{slow_server.url}/v2/models/slow/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
