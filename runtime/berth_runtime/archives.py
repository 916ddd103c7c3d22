"""Safe unpacking of ``.tar.gz``, ``.tgz``, ``.tar`` and ``.zip`` model archives.

Every entry is checked before anything is written: absolute names, ``..`` components,
links whose target leaves the destination, and device or fifo entries are refused, and
the whole archive is refused with them. Tars are then written by our own loop, not by
``tarfile.extractall``, so the safety does not depend on the interpreter having PEP 706
extraction filters (the runtime image's Debian Python 3.11.2 has none): each entry's
parent directory and each link's target are resolved against the tree already written
(a chain such as ``q -> .``, ``p -> q/..``, ``p/x`` is refused at ``p``), an existing
path is never written through, hard links must name a regular file already unpacked,
and modes are reduced to 0644/0755 (no setuid, setgid or sticky bits). Where the
interpreter has ``tarfile.data_filter`` it is applied to every entry as well. Before anything is written the archive is also
measured against :class:`Limits`: entry count, total uncompressed size, compression ratio
and the free space on the cache's disk, so a bomb is refused before the disk fills.
Extraction goes to a temporary directory inside the cache and is renamed into place only
when it succeeded, so a refused archive leaves nothing behind.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from berth_runtime.errors import ModelLoadError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass(frozen=True)
class Limits:
    """Caps on what a model source may put on disk; generous defaults for multi-GB models."""

    max_download_bytes: int = 200 * 1024**3
    max_unpacked_bytes: int = 200 * 1024**3
    max_entries: int = 100_000
    max_ratio: float = 200.0


def check_size(archive: Path, total: int, entries: int, limits: Limits, dest_dir: Path) -> None:
    """Refuse an archive over the caps, or one that would not fit on the cache's disk."""
    name = archive.name
    if entries > limits.max_entries:
        raise ModelLoadError(
            f"{name} has more than {limits.max_entries} entries "
            "(limit --max-archive-entries / BERTH_MAX_ARCHIVE_ENTRIES); refused"
        )
    if total > limits.max_unpacked_bytes:
        raise ModelLoadError(
            f"{name} unpacks to {total} bytes, over the limit of {limits.max_unpacked_bytes} "
            "(--max-unpacked-bytes / BERTH_MAX_UNPACKED_BYTES); refused"
        )
    packed = max(archive.stat().st_size, 1)
    if total > 1 << 20 and total / packed > limits.max_ratio:
        raise ModelLoadError(
            f"{name} unpacks to {total} bytes from {packed}, a compression ratio of "
            f"{total / packed:.0f}, over the limit of {limits.max_ratio:g} "
            "(--max-compression-ratio / BERTH_MAX_COMPRESSION_RATIO); refused"
        )
    free = shutil.disk_usage(dest_dir).free
    if total > free:
        raise ModelLoadError(
            f"{name} unpacks to {total} bytes but the cache disk has {free} bytes free; refused"
        )


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


def _check_tar(tar: tarfile.TarFile, limits: Limits) -> tuple[int, int]:
    """Check every entry; returns (total bytes, entries). Stops reading past max_entries."""
    total = entries = 0
    for member in tar:
        entries += 1
        if entries > limits.max_entries:
            break
        name = _check_name(member.name)
        if member.issym() or member.islnk():
            _check_link(name, member.linkname, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise ModelLoadError(f"archive entry {member.name!r} is a device or fifo; refused")
        if member.mode & (stat.S_ISUID | stat.S_ISGID) and member.isfile():
            raise ModelLoadError(f"archive entry {member.name!r} is setuid or setgid; refused")
        total += member.size if member.isfile() else 0
        if total > limits.max_unpacked_bytes:
            break  # check_size names the limit; no need to read further
    return total, entries


def _check_zip(zf: zipfile.ZipFile, limits: Limits) -> tuple[int, int]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        return 0, len(infos)
    total = 0
    for info in infos:
        name = _check_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            if info.file_size > 4096:
                raise ModelLoadError(f"archive link {info.filename!r} is too long; refused")
            target = zf.read(info).decode("utf-8", "replace")
            _check_link(name, target, hard=False)
        total += info.file_size  # zipfile never writes more than an entry declares
    return total, len(infos)


def _inside(path: str, real_root: str) -> bool:
    return path == real_root or path.startswith(real_root + os.sep)


def _write_tar(tar: tarfile.TarFile, root: Path) -> None:
    """Write every (already checked) entry under ``root``, resolving against what is there."""
    real_root = os.path.realpath(root)
    data_filter = getattr(tarfile, "data_filter", None)  # PEP 706, Python >= 3.11.4
    for member in tar:
        name = _check_name(member.name)
        if data_filter is not None:
            data_filter(member, real_root)  # raises tarfile.FilterError (a TarError)
        if name == ".":
            continue
        target = os.path.join(real_root, *name.split("/"))
        parent = os.path.realpath(os.path.dirname(target))
        if not _inside(parent, real_root):
            raise ModelLoadError(
                f"archive entry {member.name!r} goes through a link that leaves the "
                "archive; refused"
            )
        os.makedirs(parent, 0o755, exist_ok=True)  # tars need not list parent directories
        target = os.path.join(parent, os.path.basename(target))
        if os.path.islink(target) or (os.path.lexists(target) and not member.isdir()):
            raise ModelLoadError(f"archive entry {member.name!r} is written twice; refused")
        if member.isdir():
            if not os.path.isdir(target):
                os.mkdir(target, 0o755)
        elif member.issym():
            resolved = os.path.realpath(os.path.join(parent, member.linkname))
            if not _inside(resolved, real_root):
                raise ModelLoadError(
                    f"archive link {member.name!r} -> {member.linkname!r} resolves outside; refused"
                )
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = os.path.join(real_root, *_check_name(member.linkname).split("/"))
            if os.path.islink(source) or not os.path.isfile(source):
                raise ModelLoadError(
                    f"archive hard link {member.name!r} -> {member.linkname!r} does not name "
                    "a regular file unpacked before it; refused"
                )
            if not _inside(os.path.realpath(source), real_root):
                raise ModelLoadError(
                    f"archive hard link {member.name!r} -> {member.linkname!r} resolves "
                    "outside; refused"
                )
            os.link(source, target, follow_symlinks=False)
        elif member.isfile():
            src = tar.extractfile(member)
            if src is None:
                raise ModelLoadError(f"archive entry {member.name!r} has no data; refused")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with src, os.fdopen(os.open(target, flags, 0o600), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)
        else:
            raise ModelLoadError(f"archive entry {member.name!r} is a device or fifo; refused")


def _assert_inside(root: Path) -> None:
    """Belt and braces: after extraction, every path must resolve inside root."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in (*dirnames, *filenames):
            p = Path(dirpath, entry).resolve()
            if p != real_root and real_root not in p.parents:
                raise ModelLoadError(f"archive entry {entry!r} resolves outside; refused")


def extract(archive: Path, dest: Path, limits: Limits | None = None) -> Path:
    """Unpack ``archive`` into ``dest`` (which must not exist yet) and return ``dest``.

    Raises :class:`ModelLoadError` and writes nothing at ``dest`` when any entry is unsafe
    or the archive is over ``limits``.
    """
    limits = limits or Limits()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        name = archive.name.lower()
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                check_size(archive, *_check_zip(zf, limits), limits, dest.parent)
                for info in zf.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):
                        continue  # checked above; we do not materialise zip symlinks
                    zf.extract(info, tmp)
        else:
            with tarfile.open(archive, "r:*") as tar:
                check_size(archive, *_check_tar(tar, limits), limits, dest.parent)
                _write_tar(tar, tmp)
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
