"""Archives are unpacked only inside the cache; unsafe entries refuse the whole archive."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from berth_runtime import sources
from berth_runtime.errors import ModelLoadError

pytestmark = pytest.mark.unit


def tar_with(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for e in entries:
            if isinstance(e, tuple):
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tar.addfile(info, io.BytesIO(e[1]))
            else:
                tar.addfile(e)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# One row per escape a hostile archive might try.
BAD_TARS = {
    "dotdot": [("model/ok.txt", b"ok"), ("../escaped.txt", b"x")],
    "nested-dotdot": [("model/../../escaped.txt", b"x")],
    "absolute": [("/tmp/berth-escaped.txt", b"x")],
    "symlink-out": [link("model/evil", "../../escaped.txt")],
    "symlink-absolute": [link("model/passwd", "/etc/passwd")],
    "hardlink-out": [link("model/hard", "../escaped.txt", tarfile.LNKTYPE)],
    "fifo": [fifo("model/pipe")],
}


@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_hostile_tar_refused(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    archive = tar_with(src / "model.tar.gz", BAD_TARS[case])  # type: ignore[arg-type]
    cache = tmp_path / "cache"
    before = snapshot(tmp_path)
    with pytest.raises(ModelLoadError, match=r"refused|unpack"):
        sources.resolve(str(archive), cache, tmp_path / "pvc")
    after = snapshot(tmp_path)
    written = {p for p in after - before if not p.startswith("cache")}
    assert written == set()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/berth-escaped.txt").exists()
    unpacked = cache / "unpacked"
    assert not unpacked.exists() or list(unpacked.iterdir()) == []


@pytest.mark.parametrize("name", ["../escaped.txt", "/abs.txt", "a/../../escaped.txt"])
def test_hostile_zip_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/ok.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"x")
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match="refused"):
        sources.resolve(str(archive), cache, tmp_path / "pvc")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (cache / "unpacked").exists() or list((cache / "unpacked").iterdir()) == []


def test_zip_symlink_out_refused(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("model/evil")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(ModelLoadError, match="refused"):
        sources.resolve(str(archive), tmp_path / "cache", tmp_path / "pvc")


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_good_archive_unpacked_once_by_digest(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"model{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("model/berth.json", b"{}")
            zf.writestr("model/sub/w.bin", b"w")
    else:
        tar_with(
            archive,
            [
                ("model/berth.json", b"{}"),
                ("model/sub/w.bin", b"w"),
                link("model/alias", "sub/w.bin"),
            ],
        )
    cache = tmp_path / "cache"
    root = sources.resolve(f"file://{archive}", cache, tmp_path / "pvc")
    assert root.name == "model" and (root / "sub" / "w.bin").read_bytes() == b"w"
    assert cache in root.parents
    again = sources.resolve(str(archive), cache, tmp_path / "pvc")
    assert again == root


def test_pvc_uri(tmp_path: Path) -> None:
    (tmp_path / "pvc" / "models" / "resnet").mkdir(parents=True)
    got = sources.resolve("pvc://models/resnet", tmp_path / "cache", tmp_path / "pvc")
    assert got == tmp_path / "pvc" / "models" / "resnet"
    with pytest.raises(ModelLoadError):
        sources.resolve("pvc://models/../../etc", tmp_path / "cache", tmp_path / "pvc")


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://host/model.pt",
        "https://host/model.pt",
        "https://host/m.pt#sha256=abc",
        "/no/such/model",
    ],
)
def test_bad_uris(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ModelLoadError):
        sources.resolve(uri, tmp_path / "cache", tmp_path / "pvc")
