"""Safe unpacking of ``.tar.gz``, ``.tgz``, ``.tar`` and ``.zip`` model archives.

Every entry is checked before anything is written: absolute names, ``..`` components,
links whose target leaves the destination, and device or fifo entries are refused, and
the whole archive is refused with them. Extraction goes to a temporary directory inside
the cache and is renamed into place only when it succeeded, so a refused archive leaves
nothing behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

from berth_runtime.errors import ModelLoadError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive(path: Path) -> bool:
    """Whether a file's name says it is an archive we unpack."""
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _check_name(name: str) -> str:
    """Normalise an entry name, refusing absolute paths and parent references."""
    if not name or "\x00" in name:
        raise ModelLoadError(f"archive entry {name!r} has an invalid name")
    unixy = name.replace("\\", "/")
    if unixy.startswith("/") or (len(unixy) > 1 and unixy[1] == ":"):
        raise ModelLoadError(f"archive entry {name!r} is an absolute path; refused")
    parts = unixy.split("/")
    if ".." in parts:
        raise ModelLoadError(f"archive entry {name!r} points outside the archive; refused")
    return posixpath.normpath(unixy)


def _check_link(name: str, target: str, hard: bool) -> None:
    """Refuse a link whose target is absolute or resolves outside the destination."""
    if target.startswith("/") or "\x00" in target:
        raise ModelLoadError(f"archive link {name!r} -> {target!r} is absolute; refused")
    base = "" if hard else posixpath.dirname(name)
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise ModelLoadError(f"archive link {name!r} -> {target!r} points outside; refused")


def _check_tar(tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        name = _check_name(member.name)
        if member.issym() or member.islnk():
            _check_link(name, member.linkname, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise ModelLoadError(f"archive entry {member.name!r} is a device or fifo; refused")


def _check_zip(zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        name = _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(name, target, hard=False)


def _assert_inside(root: Path) -> None:
    """Belt and braces: after extraction, every path must resolve inside root."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in (*dirnames, *filenames):
            p = Path(dirpath, entry).resolve()
            if p != real_root and real_root not in p.parents:
                raise ModelLoadError(f"archive entry {entry!r} resolves outside; refused")


def extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` (which must not exist yet) and return ``dest``.

    Raises :class:`ModelLoadError` and writes nothing at ``dest`` when any entry is unsafe.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        name = archive.name.lower()
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf)
                for info in zf.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):
                        continue  # checked above; we do not materialise zip symlinks
                    zf.extract(info, tmp)
        else:
            with tarfile.open(archive, "r:*") as tar:
                _check_tar(tar)
                tar.extractall(tmp, filter="data")
        _assert_inside(tmp)
        os.replace(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"cannot unpack {archive.name}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def single_root(path: Path) -> Path:
    """If an unpacked directory holds exactly one directory and nothing else, descend."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return path
