"""Bounded downloads and archives: over a cap is refused with a message naming the setting,
before anything lands in the cache (real tar/zip files, a real HTTP server)."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from berth_runtime import sources
from berth_runtime.archives import Limits
from berth_runtime.errors import ModelLoadError
from httpfiles import serve_dir

pytestmark = pytest.mark.unit


def _tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _nothing_unpacked(cache: Path) -> bool:
    unpacked = cache / "unpacked"
    return not unpacked.exists() or not any(
        p for p in unpacked.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def test_gzip_bomb_refused_by_ratio(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses about a thousand-fold: a small download, a full disk.
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", {"model.pt": b"\0" * (64 << 20)})
    assert bomb.stat().st_size < 1 << 20
    cache = tmp_path / "cache"
    with pytest.raises(
        ModelLoadError,
        match=r"compression ratio of \d+, over the limit of 200 \(--max-compression-ratio",
    ):
        sources.resolve(str(bomb), cache, tmp_path)
    assert _nothing_unpacked(cache)


def test_zip_bomb_refused_by_ratio(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.pt", b"\0" * (32 << 20))
    with pytest.raises(ModelLoadError, match="compression ratio"):
        sources.resolve(str(bomb), tmp_path / "cache", tmp_path)


def test_unpacked_size_cap(tmp_path: Path) -> None:
    arc = _tar_gz(tmp_path / "m.tar.gz", {"a.bin": bytes(range(256)) * 8192})
    with pytest.raises(ModelLoadError, match="--max-unpacked-bytes"):
        sources.resolve(str(arc), tmp_path / "cache", tmp_path, Limits(max_unpacked_bytes=1 << 20))


def test_entry_count_cap(tmp_path: Path) -> None:
    arc = _tar_gz(tmp_path / "m.tar.gz", {f"f{i}": b"x" for i in range(50)})
    with pytest.raises(ModelLoadError, match="more than 20 entries"):
        sources.resolve(str(arc), tmp_path / "cache", tmp_path, Limits(max_entries=20))


def test_generous_defaults_unpack_a_normal_archive(tmp_path: Path) -> None:
    arc = _tar_gz(tmp_path / "m.tar.gz", {"m/model.pt": bytes(range(256)) * 4096})
    out = sources.resolve(str(arc), tmp_path / "cache", tmp_path)
    assert (out / "model.pt").stat().st_size == 256 * 4096


def test_download_over_cap_refused_before_writing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    blob = bytes(range(256)) * 8192  # 2 MiB
    (site / "m.pt").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    cache = tmp_path / "cache"
    with serve_dir(site) as base:
        with pytest.raises(ModelLoadError, match=r"over the download limit .*--max-download-bytes"):
            sources.resolve(
                f"{base}/m.pt#sha256={digest}", cache, tmp_path, Limits(max_download_bytes=1 << 20)
            )
        assert not any(p.is_file() for p in (cache / "blobs").rglob("*"))
        # Under the cap it downloads and verifies as before.
        got = sources.resolve(f"{base}/m.pt#sha256={digest}", cache, tmp_path)
    assert got.read_bytes() == blob


def test_credentials_in_a_url_never_reach_messages(tmp_path: Path) -> None:
    # The CRD refuses user-info; a standalone runtime given one still never prints it.
    uri = "http://user:hunter2@127.0.0.1:9/m.pt#sha256=" + "0" * 64
    with pytest.raises(ModelLoadError) as info:
        sources.resolve(uri, tmp_path / "cache", tmp_path)
    assert "hunter2" not in str(info.value) and "***@127.0.0.1:9" in str(info.value)
