"""Images for the dev cluster's real node, built here and imported into its containerd.

Nothing is pulled: the node's containerd only has what this module imports.

- `localhost/berth/pause:1`: containerd's sandbox image, Debian's static busybox
  sleeping, built with buildah (vfs storage, no daemon).
- `ghcr.io/berth-dev/berth-runtime:0.1.0` (the operator's default runtime image, so
  model pods need no override) and `localhost/berth/runtime:dev`: a Debian bookworm
  root filesystem (mmdebstrap, minbase + python3.11) with a relocatable virtualenv
  at /opt/berth holding the locked dependencies (uv.lock, without the dev group and Triton) and
  Berth itself. Two layers: the dependencies (keyed by uv.lock, pyproject.toml and this
  recipe) and Berth's own code (keyed by its sources), so a code change rebuilds and
  re-imports only the small layer. The layers are written as plain tar files into an
  OCI layout by hand: buildah's vfs driver would copy the 5.5 GB dependency layer on
  every build.

PyTorch from PyPI is the CUDA build: `import torch` fails without the nvidia-* wheels
("libcublasLt.so.*[0-9] not found"), even on a CPU, and PyPI has no CPU-only wheel, so
the dependency layer carries them (about 3 GB of its 5.5 GB).

Everything is cached by content under ~/.cache/berth/images (outside the repository).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import DevCluster

REPO = Path(__file__).resolve().parent.parent.parent
RECIPE = "6"  # bump to rebuild the dependency and Berth layers
DEBIAN_RECIPE = "3"  # bump to rebuild the Debian root filesystem
# Locked packages the image leaves out: Triton (1 GB) compiles GPU kernels for
# torch.compile and is never imported by `import torch` or the runtime on CPU.
LEFT_OUT = ("triton",)
# Optional extras of berth-runtime the image carries (object-store sources).
EXTRAS = ("s3", "gcs")
PAUSE_IMAGE = "localhost/berth/pause:1"
RUNTIME_IMAGES = ("ghcr.io/berth-dev/berth-runtime:0.1.0", "localhost/berth/runtime:dev")
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3.11", "ca-certificates", "libgomp1")
VENV = "/opt/berth"
# The runtime image carries the berth-runtime workspace member alone (not the operator,
# the dev cluster or the benchmarks).
RUNTIME_MEMBER = "runtime"
SOURCES = ("runtime/berth_runtime",)
# The Berth layer also carries the bytecode of every module a runtime imports at start
# (torch, FastAPI, ...; not Berth's own few), compiled at build time: the layers' files all have
# mtime 0 and the pods' root filesystem is read-only, so without it each pod start
# compiles those modules again (about a third of the runtime's import time, the largest
# part of a cold start). Unchecked-hash .pyc files: valid whatever the mtimes.
BYTECODE_RECIPE = "1"  # bump to rebuild the Berth layer's bytecode (not the dependencies)
STARTUP_IMPORTS = (
    "berth_runtime.server", "berth_runtime.state", "berth_runtime.models.loader",
    "berth_runtime.models.torch_models", "berth_runtime.models.text", "berth_runtime.llm.model",
)  # fmt: skip
BUSYBOX = Path("/bin/busybox")


def cache_dir() -> Path:
    """~/.cache/berth/images; BERTH_IMAGE_CACHE_DIR moves only the images (they are large)."""
    if os.environ.get("BERTH_IMAGE_CACHE_DIR"):
        return Path(os.environ["BERTH_IMAGE_CACHE_DIR"])
    base = os.environ.get("BERTH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), "berth"
    )
    return Path(base) / "images"


def _log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _sha_files(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(str(p.relative_to(REPO)).encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def deps_key() -> str:
    return _sha_files(
        [REPO / "uv.lock", REPO / RUNTIME_MEMBER / "pyproject.toml"],
        RECIPE + " ".join(DEBIAN_PACKAGES),
    )


def app_key() -> str:
    files = sorted(
        p
        for src in SOURCES
        for p in (REPO / src).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    return _sha_files(
        [REPO / RUNTIME_MEMBER / "pyproject.toml", *files], RECIPE + "pyc" + BYTECODE_RECIPE
    )


@contextmanager
def _locked(name: str) -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / f"{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], log: Path, **kw: Any) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False, **kw)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(
            f"`{' '.join(argv[:3])} ...` failed ({proc.returncode}); log {log}:\n{tail}"
        )


def _digest_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), path.stat().st_size


# -- OCI layout by hand ------------------------------------------------------------------
def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(
    layout: Path, layers: list[Path], config: dict[str, Any], names: tuple[str, ...]
) -> str:
    """An OCI image layout with uncompressed tar layers (hard-linked); the manifest digest."""
    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs = []
    diff_ids = []
    for tar in layers:
        digest, size = _digest_file(tar)
        target = layout / "blobs" / "sha256" / digest.split(":")[1]
        os.link(tar, target)
        descs.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
        )
        diff_ids.append(digest)
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "created": "1970-01-01T00:00:00Z",
    }
    cfg_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **_blob(layout, json.dumps(cfg).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg_desc,
        "layers": descs,
    }
    man_desc = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **man_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": n,
                    "org.opencontainers.image.ref.name": n,
                },
            }
            for n in names
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(man_desc["digest"])


def _tar_dir(src: Path, out: Path, members: list[str] | None = None) -> None:
    """A reproducible tar of `src` (or only `members`, paths relative to it)."""
    tmp = out.with_suffix(".tmp")
    argv = ["tar", "--sort=name", "--numeric-owner", "--owner=0", "--group=0", "--mtime=@0",
            "-C", str(src), "-cf", str(tmp)]  # fmt: skip
    if members is None:
        argv.append(".")
    else:
        argv += ["--no-recursion", "-T", "-"]
    subprocess.run(argv, input="\n".join(members or []), text=True, check=True)
    tmp.replace(out)


# -- the runtime image -------------------------------------------------------------------
def _debian_rootfs_name() -> str:
    return f"debian-{DEBIAN_SUITE}-{DEBIAN_RECIPE}"


def _debian_rootfs(log: Path) -> Path:
    root = cache_dir() / _debian_rootfs_name()
    if (root / ".done").exists():
        return root
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"mmdebstrap {DEBIAN_SUITE} (minbase + {', '.join(DEBIAN_PACKAGES)}); a minute or two")
    _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
          "--dpkgopt=path-exclude=/usr/share/{doc,man,locale}/*", DEBIAN_SUITE, str(tmp)], log)  # fmt: skip
    (tmp / ".done").touch()
    tmp.replace(root)
    return root


def _uv() -> str:
    return shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")


def _files_under(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in dirnames + filenames:
            out.add(os.path.normpath(os.path.join(rel, n)))
    return out


def build_runtime() -> tuple[Path, str]:
    """The runtime image's OCI layout (built when its sources changed) and manifest digest."""
    dkey, akey = deps_key(), app_key()
    layout = cache_dir() / f"runtime-{dkey}-{akey}"
    if (layout / "index.json").exists():
        return layout, (layout / "digest").read_text()
    with _locked("runtime"):
        if (layout / "index.json").exists():
            return layout, (layout / "digest").read_text()
        log = cache_dir() / "build-runtime.log"
        log.write_text("")
        t0 = time.monotonic()
        work = cache_dir() / f"rootfs-{dkey}"
        deps_tar = cache_dir() / f"deps-{dkey}.tar"
        listing = cache_dir() / f"deps-{dkey}.files"
        if not deps_tar.exists():
            base = _debian_rootfs(log)
            shutil.rmtree(work, ignore_errors=True)
            _log(f"dependency layer {dkey}: Debian + locked Python deps (uv; a few minutes cold)")
            _run(["cp", "-a", str(base), str(work)], log)
            (work / ".done").unlink(missing_ok=True)
            venv = work / VENV.lstrip("/")
            _run(
                [_uv(), "venv", "--relocatable", "--python", "/usr/bin/python3.11", str(venv)], log
            )
            req = cache_dir() / f"requirements-{dkey}.txt"
            # the s3 and gcs extras: boto3 / google-cloud-storage for s3:// and gs:// models
            _run([_uv(), "export", "--frozen", "--no-dev", "--package", "berth-runtime",
                  *(f"--extra={x}" for x in EXTRAS), "--no-emit-workspace", "--no-hashes",
                  *(f"--no-emit-package={p}" for p in LEFT_OUT),
                  "--project", str(REPO), "-o", str(req)], log)  # fmt: skip
            # --no-deps: the export is the whole pinned closure, less LEFT_OUT
            _run([_uv(), "pip", "install", "--python", str(venv / "bin" / "python"),
                  "--link-mode", "hardlink", "--no-deps", "-r", str(req)], log)  # fmt: skip
            listing.write_text("\n".join(sorted(_files_under(work))))
            _log("dependency layer: writing the tar (5-6 GB)")
            _tar_dir(work, deps_tar)
        _log(f"Berth layer {akey}")
        venv = work / VENV.lstrip("/")
        py = str(venv / "bin" / "python")
        if not venv.exists():
            raise RuntimeError(f"{work} is gone; delete {deps_tar} to rebuild the dependency layer")
        subprocess.run(
            [_uv(), "pip", "uninstall", "--python", py, "berth-runtime"],
            capture_output=True,
            check=False,
        )
        _run(
            [
                _uv(),
                "pip",
                "install",
                "--python",
                py,
                "--no-deps",
                "--reinstall",
                "--no-cache",
                str(REPO / RUNTIME_MEMBER),
            ],
            log,
        )
        _compile_startup_bytecode(venv, log)
        base_files = set(listing.read_text().split("\n"))
        new = sorted(f for f in _files_under(work) if f not in base_files)
        app_tar = cache_dir() / f"app-{akey}.tar"
        _tar_dir(work, app_tar, new)
        config = {
            "Env": [
                f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
                "HOME=/tmp",
            ],
            "Entrypoint": [f"{VENV}/bin/berth-runtime"],
            "Cmd": ["serve"],
            "User": "65532:65532",
            "WorkingDir": "/",
            "Labels": oci_labels("berth-runtime", "Berth's model server (PyTorch)"),
        }
        tmp = layout.with_suffix(".tmp")
        digest = write_layout(tmp, [deps_tar, app_tar], config, RUNTIME_IMAGES)
        (tmp / "digest").write_text(digest)
        shutil.rmtree(layout, ignore_errors=True)
        tmp.replace(layout)
        _log(f"runtime image {digest[:19]} built in {time.monotonic() - t0:.0f}s: {layout}")
        for old in cache_dir().glob("app-*.tar"):
            if old != app_tar:
                old.unlink(missing_ok=True)
        for old in cache_dir().glob("runtime-*"):
            if old != layout and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        for pattern in ("deps-*", "rootfs-*", "requirements-*", "debian-*"):
            for old in cache_dir().glob(pattern):
                if dkey not in old.name and old.name != _debian_rootfs_name():
                    if old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
                    else:
                        old.unlink(missing_ok=True)
        return layout, digest


# -- the operator image (buildah bud from images/operator/Containerfile) --------------------
OPERATOR_IMAGE = "ghcr.io/berth-dev/berth-operator:0.1.0"
OPERATOR_RECIPE = "1"  # bump to rebuild the operator image
OPERATOR_DEBIAN_PACKAGES = ("python3.11",)  # no ca-certificates: it pulls in perl and openssl
# Left out of the operator's base: documentation, manual pages, translations.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*",
                 "/usr/share/info/*", "/usr/share/lintian/*")  # fmt: skip


_COMPILE = """
import importlib, py_compile, sys
root = sys.argv[1]
for name in sys.argv[2:]:
    importlib.import_module(name)
n = 0
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    # not Berth's own modules: reinstalled on every build, their stale unchecked .pyc
    # files would outlive a source change in the shared build tree
    if path.endswith(".py") and path.startswith(root) and "/berth_runtime/" not in path:
        py_compile.compile(path, dfile=path.replace(root, "/opt/berth", 1), doraise=False,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        n += 1
print(f"compiled {n} modules")
"""


def _compile_startup_bytecode(venv: Path, log: Path) -> None:
    """Unchecked-hash .pyc files for the modules a runtime imports at start (in `venv`)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache_dir()), "PYTHONDONTWRITEBYTECODE": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    _run([str(venv / "bin" / "python"), "-c", _COMPILE, str(venv), *STARTUP_IMPORTS], log,
         env=env, cwd="/")  # fmt: skip


def oci_labels(title: str, description: str) -> dict[str, str]:
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.description": description,
        "org.opencontainers.image.version": "0.1.0",
        "org.opencontainers.image.revision": rev or "unknown",
        "org.opencontainers.image.source": "https://github.com/berth-dev/berth",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.vendor": "Berth",
    }


def _buildah() -> list[str]:
    store = cache_dir() / "buildah"
    return ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
            "--storage-driver", "vfs"]  # fmt: skip


def _slim_base(log: Path) -> str:
    """A Debian base image for the operator, made by mmdebstrap and imported with buildah."""
    key = hashlib.sha256(
        (
            OPERATOR_RECIPE + DEBIAN_SUITE + " ".join(OPERATOR_DEBIAN_PACKAGES + DPKG_EXCLUDES)
        ).encode()
    ).hexdigest()[:12]
    name = f"localhost/berth/debian-python:{DEBIAN_SUITE}-{key}"
    b = _buildah()
    if (
        subprocess.run([*b, "inspect", "--type", "image", name], capture_output=True).returncode
        == 0
    ):
        return name
    tar = cache_dir() / f"debian-slim-{key}.tar"
    if not tar.exists():
        _log(f"mmdebstrap {DEBIAN_SUITE} (minbase + {', '.join(OPERATOR_DEBIAN_PACKAGES)}), slim")
        tmp = tar.with_suffix(".tmp.tar")
        _run(["mmdebstrap", "--variant=minbase", f"--include={','.join(OPERATOR_DEBIAN_PACKAGES)}",
              *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
              "--dpkgopt=path-include=/usr/share/doc/*/copyright",
              "--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/log/*",
              DEBIAN_SUITE, str(tmp)], log)  # fmt: skip
        tmp.replace(tar)
    ctr = subprocess.run(
        [*b, "from", "scratch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        _run([*b, "add", ctr, str(tar), "/"], log)
        _run([*b, "commit", "--timestamp", "0", ctr, name], log)
    finally:
        subprocess.run([*b, "rm", ctr], capture_output=True, check=False)
    return name


def operator_key() -> str:
    files = sorted(
        p
        for p in [
            *(REPO / "operator" / "berth_operator").rglob("*"),
            *(REPO / "images" / "operator").rglob("*"),
        ]
        if p.is_file() and "__pycache__" not in p.parts
    )
    return _sha_files(
        [REPO / "uv.lock", REPO / "operator" / "pyproject.toml", *files],
        OPERATOR_RECIPE + " ".join(OPERATOR_DEBIAN_PACKAGES + DPKG_EXCLUDES),
    )


def build_operator() -> Path:
    """The operator image as an OCI archive (built when its sources changed)."""
    key = operator_key()
    archive = cache_dir() / f"operator-{key}.tar"
    if archive.exists():
        return archive
    with _locked("operator"):
        if archive.exists():
            return archive
        log = cache_dir() / "build-operator.log"
        log.write_text("")
        t0 = time.monotonic()
        base = _slim_base(log)
        ctx = cache_dir() / f"operator-ctx-{key}"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        venv = ctx / "venv"
        _log(f"operator image {key}: venv from uv.lock (berth-operator only)")
        _run([_uv(), "venv", "--relocatable", "--python", "/usr/bin/python3.11", str(venv)], log)
        req = ctx / "requirements.txt"
        _run([_uv(), "export", "--frozen", "--no-dev", "--package", "berth-operator",
              "--no-emit-workspace", "--no-hashes", "--project", str(REPO), "-o", str(req)], log)  # fmt: skip
        py = str(venv / "bin" / "python")
        _run([_uv(), "pip", "install", "--python", py, "--link-mode", "copy", "--no-deps",
              "--no-compile", "-r", str(req)], log)  # fmt: skip
        _run([_uv(), "pip", "install", "--python", py, "--link-mode", "copy", "--no-deps",
              "--no-cache", "--no-compile", str(REPO / "operator")], log)  # fmt: skip
        rev = oci_labels("", "")["org.opencontainers.image.revision"]
        b = _buildah()
        _log("operator image: buildah bud (chroot isolation, vfs)")
        _run([*b, "bud", "--isolation", "chroot", "--timestamp", "0", "--layers=false",
              "--build-arg", f"BASE={base}", "--build-arg", f"REVISION={rev}",
              "-f", str(REPO / "images" / "operator" / "Containerfile"),
              "-t", OPERATOR_IMAGE, str(ctx)], log)  # fmt: skip
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        _run([*b, "push", OPERATOR_IMAGE, f"oci-archive:{tmp}:{OPERATOR_IMAGE}"], log)
        tmp.replace(archive)
        shutil.rmtree(ctx, ignore_errors=True)
        for old in cache_dir().glob("operator-*.tar"):
            if old != archive:
                old.unlink(missing_ok=True)
        _log(f"operator image built in {time.monotonic() - t0:.0f}s: {archive} "
             f"({archive.stat().st_size / 1e6:.0f} MB, compressed layers)")  # fmt: skip
        return archive


# -- the pause image ---------------------------------------------------------------------
def build_pause() -> tuple[Path, str]:
    """containerd's sandbox image from Debian's busybox-static, with buildah (vfs)."""
    if not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} is missing: `make node-deps` installs busybox-static")
    key = hashlib.sha256(BUSYBOX.read_bytes() + RECIPE.encode()).hexdigest()[:16]
    archive = cache_dir() / f"pause-{key}.tar"
    if archive.exists():
        return archive, ""
    with _locked("pause"):
        if archive.exists():
            return archive, ""
        store = cache_dir() / "buildah"
        b = [
            "buildah",
            "--root",
            str(store / "root"),
            "--runroot",
            str(store / "run"),
            "--storage-driver",
            "vfs",
        ]
        log = cache_dir() / "build-pause.log"
        log.write_text("")
        _log("pause image (buildah from scratch + busybox-static)")
        ctr = subprocess.run(
            [*b, "from", "scratch"], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            _run([*b, "copy", ctr, str(BUSYBOX), "/busybox"], log)
            # sleeps until killed: containerd stops sandboxes with SIGKILL
            _run(
                [
                    *b,
                    "config",
                    "--entrypoint",
                    '["/busybox", "sleep", "2147483647"]',
                    "--user",
                    "65535:65535",
                    ctr,
                ],
                log,
            )
            tmp = archive.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            _run([*b, "commit", "--format", "oci", ctr, f"oci-archive:{tmp}:{PAUSE_IMAGE}"], log)
            tmp.replace(archive)
        finally:
            subprocess.run([*b, "rm", ctr], capture_output=True, check=False)
        return archive, ""


# -- import into a node ------------------------------------------------------------------
def node_images(sock: Path) -> dict[str, str]:
    """name -> target digest of the images in the node's k8s.io namespace."""
    out = subprocess.run(
        ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    images = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            images[parts[0]] = parts[2]
    return images


def seed_content(
    ctr: list[str], layout: Path, content_root: Path, min_size: int = 1 << 20
) -> list[str]:
    """Hard-link the layout's large blobs into containerd's content store; their names.

    A local shortcut: containerd's content store is a directory of immutable blobs named
    by digest, and an import whose blob is already there skips the copy (content is
    shared between namespaces), so a 6 GB layer costs a link instead of a gRPC upload.
    The import then only unpacks it.
    """
    blobs = content_root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    seeded = []
    for blob in (layout / "blobs" / "sha256").iterdir():
        size = blob.stat().st_size
        if size < min_size:
            continue
        target = blobs / blob.name
        if not target.exists():
            os.link(blob, target)
        # registers the blob in the namespace: the writer finds it present and copies nothing
        proc = subprocess.run(
            [*ctr, "content", "ingest", f"--expected-digest=sha256:{blob.name}",
             f"--expected-size={size}", f"berth-seed-{blob.name[:12]}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            seeded.append(blob.name)
    return seeded


def _import(sock: Path, source: Path, log: Path, content_root: Path | None = None) -> None:
    argv = ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import", "--no-unpack=false"]
    if source.is_dir():  # an OCI layout: stream it as a tar (large blobs are linked in)
        seeded = seed_content(argv[:5], source, content_root) if content_root else []
        excludes = [f"--exclude=./blobs/sha256/{name}" for name in seeded]
        tar = subprocess.Popen(
            ["tar", "-C", str(source), *excludes, "-cf", "-", "."], stdout=subprocess.PIPE
        )
        with log.open("ab") as out:
            proc = subprocess.run(
                [*argv, "-"], stdin=tar.stdout, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        tar.wait()
    else:
        with log.open("ab") as out:
            proc = subprocess.run(
                [*argv, str(source)], stdout=out, stderr=subprocess.STDOUT, check=False
            )
    if proc.returncode != 0:
        raise RuntimeError(f"ctr import {source} failed; read {log}")


def _archive_digest(archive: Path) -> str:
    import tarfile

    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return str(json.load(member)["manifests"][0]["digest"])


def runtime_wanted(env: dict[str, str] | None = None) -> bool:
    """BERTH_DEV_RUNTIME_IMAGE=0 leaves the 5.5 GB runtime image out of the node (for a
    test run that starts no model and no in-cluster gateway; the chart tests import it
    anyway, the chart's gateway runs it); anything else keeps it."""
    env = dict(os.environ) if env is None else env
    return env.get("BERTH_DEV_RUNTIME_IMAGE", "1") != "0"


def ensure_imported(
    dev: DevCluster, sock: Path, runtime: bool | None = None, operator: bool = True
) -> None:
    """Build (cached) and import the pause, operator and runtime images unless the node has them."""
    from .node import NodeError

    runtime = runtime_wanted() if runtime is None else runtime
    log = dev.paths.log("images")
    try:
        have = node_images(sock)
        if PAUSE_IMAGE not in have:
            archive, _ = build_pause()
            dev._step(f"node: importing {PAUSE_IMAGE}")
            _import(sock, archive, log)
        if operator:
            dev._step("node: operator image (buildah; built once per source change)")
            archive = build_operator()
            if have.get(OPERATOR_IMAGE) != _archive_digest(archive):
                dev._step(f"node: importing {OPERATOR_IMAGE}")
                _import(sock, archive, log)
        if runtime:
            dev._step("node: runtime image (built once per dependency and source change)")
            layout, digest = build_runtime()
            if any(have.get(n) != digest for n in RUNTIME_IMAGES):
                dev._step(
                    f"node: importing {RUNTIME_IMAGES[0]} ({digest[:19]}; a 5.5 GB layer the first time)"
                )
                t0 = time.monotonic()
                _import(sock, layout, log, sock.parent / "containerd" / "root")
                dev._step(f"node: imported in {time.monotonic() - t0:.0f}s")
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        raise NodeError(f"images: {err}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m berth_dev.images", description=__doc__.split("\n")[0]
    )
    p.add_argument("what", choices=["pause", "runtime", "operator", "all"])
    args = p.parse_args(argv)
    if args.what in ("pause", "all"):
        print(build_pause()[0])
    if args.what in ("operator", "all"):
        print(build_operator())
    if args.what in ("runtime", "all"):
        print(build_runtime()[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
