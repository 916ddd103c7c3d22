"""Tar links are resolved against the tree already unpacked, on every interpreter.

The runtime image's Python (Debian bookworm's 3.11.2) has no PEP 706 extraction
filters, so these rows run twice: once as this interpreter is, once with
``tarfile.data_filter`` hidden, which is how the image's interpreter behaves. The same
module runs inside the runtime image itself in tests/install/test_runtime_image.py.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from berth_runtime import archives, sources
from berth_runtime.errors import ModelLoadError

pytestmark = pytest.mark.unit


def entry(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, kind=tarfile.SYMTYPE, link=target)


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return entry(name, kind=tarfile.LNKTYPE, link=target)


def write_tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.fixture(params=["as-is", "no-pep706"])
def interpreter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each row with and without the interpreter's extraction filters."""
    if request.param == "no-pep706":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


# One row per way a hostile tar may try to write or point outside through links.
HOSTILE = {
    # the chain the lexical check alone accepts: p resolves to the destination's parent
    "symlink-chain": [sym("q", "."), sym("p", "q/.."), entry("p/pwned.txt", b"x")],
    # the same chain, one level down, inside the model directory
    "symlink-chain-nested": [
        entry("model/w.bin", b"w"),
        sym("model/q", "."),
        sym("model/p", "q/../.."),
        entry("model/p/pwned.txt", b"x"),
    ],
    # a link through a link: a -> b, then b -> .. (a's target is checked when written)
    "link-then-retarget": [sym("a", "b/pwned.txt"), sym("b", ".."), entry("a", b"x")],
    # a regular file written through an existing symlink would land outside
    "write-through-link": [sym("model/evil", "../../pwned.txt"), entry("model/evil", b"x")],
    # a hard link to a symlink that points outside
    "hardlink-to-symlink": [sym("s", "q/.."), hard("h", "s")],
    # a hard link to a file that is not in the archive
    "hardlink-to-nothing": [hard("model/h", "model/none")],
    # setuid and setgid bits are refused, not silently dropped
    "setuid": [entry("model/run", b"#!/bin/sh\n", mode=0o4755)],
    "setgid": [entry("model/run", b"#!/bin/sh\n", mode=0o2755)],
    # device files and fifos never reach the disk
    "chardev": [entry("model/null", kind=tarfile.CHRTYPE)],
    "fifo": [entry("model/pipe", kind=tarfile.FIFOTYPE)],
    # absolute and parent names, whatever the interpreter
    "absolute": [entry("/tmp/berth-pwned.txt", b"x")],
    "dotdot": [entry("model/../../pwned.txt", b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_link_tar_refused(tmp_path: Path, case: str, interpreter: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    archive = write_tar(src / "model.tar.gz", HOSTILE[case])
    cache = tmp_path / "a" / "b" / "cache"
    with pytest.raises(ModelLoadError, match=r"refused|cannot unpack"):
        sources.resolve(str(archive), cache, tmp_path / "pvc")
    for place in (tmp_path, tmp_path / "a", tmp_path / "a" / "b", cache):
        assert not (place / "pwned.txt").exists(), place
    assert not Path("/tmp/berth-pwned.txt").exists()
    unpacked = cache / "unpacked"
    assert not unpacked.exists() or list(unpacked.iterdir()) == []


def test_good_tar_with_links_unpacks(tmp_path: Path, interpreter: str) -> None:
    """Links that stay inside are kept: Hugging Face style trees use them."""
    archive = write_tar(
        tmp_path / "model.tar.gz",
        [
            entry("model/", kind=tarfile.DIRTYPE, mode=0o755),
            entry("model/blobs/abc", b"weights"),
            sym("model/w.bin", "blobs/abc"),
            hard("model/copy.bin", "model/blobs/abc"),
            entry("model/run.sh", b"#!/bin/sh\n", mode=0o777),
            entry("model/deep/er/x.txt", b"x"),  # parents not listed in the tar
        ],
    )
    root = sources.resolve(str(archive), tmp_path / "cache", tmp_path / "pvc")
    assert (root / "w.bin").read_bytes() == b"weights"
    assert (root / "copy.bin").read_bytes() == b"weights"
    assert (root / "deep" / "er" / "x.txt").read_bytes() == b"x"
    assert stat.S_IMODE((root / "run.sh").stat().st_mode) == 0o755  # no group/other write
    assert stat.S_IMODE((root / "blobs" / "abc").stat().st_mode) == 0o644


def test_truncated_tar_is_a_load_error(tmp_path: Path, interpreter: str) -> None:
    good = write_tar(tmp_path / "good.tar.gz", [entry("model/w.bin", os.urandom(100_000))])
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelLoadError):
        archives.extract(bad, tmp_path / "cache" / "x")
