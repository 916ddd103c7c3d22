"""Helpers of the install tests: helm as a small callable (built from Go modules, cached)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "berth"


class Helm:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),  # client-go's discovery cache (~/.kube/cache) stays in there
        }

    def __call__(
        self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = dict(self.env)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, input=stdin,
            timeout=timeout, check=False,
        )  # fmt: skip

    def template(self, *sets: str, namespace: str = "berth-system", release: str = "b") -> str:
        args: list[str] = []
        for s in sets:
            args += ["--set", s]
        proc = self("template", release, str(CHART), "--namespace", namespace, *args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def set_args(sets: Sequence[str]) -> list[str]:
    out: list[str] = []
    for s in sets:
        out += ["--set", s]
    return out


def unpack_oci_archive(archive: Path, dest: Path) -> tuple[Path, dict[str, object]]:
    """An image's root filesystem (layers applied in order, whiteouts honoured) and its config."""
    import gzip
    import json
    import shutil
    import tarfile

    layout = dest / "layout"
    layout.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="fully_trusted")
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    rootfs = dest / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        path = blobs / layer["digest"].split(":")[1]
        opener = gzip.open if layer["mediaType"].endswith("gzip") else open
        with opener(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:  # type: ignore[operator]
            for member in tar:
                name = Path(member.name)
                if name.name.startswith(".wh."):
                    target = rootfs / name.parent / name.name[4:]
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink(missing_ok=True)
                    continue
                tar.extract(member, rootfs, filter="fully_trusted")
    shutil.rmtree(layout)
    return rootfs, config


def runc_run(
    rootfs: Path, config: dict[str, object], args: list[str], bundle: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the image's entrypoint + args with runc: read-only root, its own user, no network."""
    import json
    import uuid

    img = config["config"]
    assert isinstance(img, dict)
    user = str(img.get("User") or "0:0").split(":")
    spec = subprocess.run(
        ["runc", "spec", "--bundle", str(bundle)], capture_output=True, text=True, check=False
    )
    assert spec.returncode == 0, spec.stderr
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = [*img.get("Entrypoint", []), *args]
    cfg["process"]["env"] = list(img.get("Env", []))
    cfg["process"]["cwd"] = img.get("WorkingDir") or "/"
    cfg["process"]["user"] = {"uid": int(user[0]), "gid": int(user[1] if len(user) > 1 else 0)}
    cfg["mounts"].append(
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=16m"]}
    )  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(cfg))
    state = bundle / "state"
    return subprocess.run(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle), f"berth-t-{uuid.uuid4().hex[:8]}"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# -- the runtime image as a runc bundle -----------------------------------------------------
PYTEST_PACKAGES = ("_pytest", "pytest", "pluggy", "iniconfig", "py.py")
"""The test harness copied next to the image (pure Python): the code under test stays the
image's own (its interpreter, torch, berth_runtime), only pytest comes from the venv."""


def runtime_rootfs(dest: Path) -> tuple[Path, dict[str, object]]:
    """The runtime image's root filesystem and config, without copying 5 GB.

    The image is the dependency layer (the shared build tree ``rootfs-<deps key>`` as it
    was when the layer's tar was written; its file list is ``deps-<key>.files``) plus the
    Berth layer built from this checkout. This hard-links the build tree into ``dest``
    (under the build lock, so no other build changes it meanwhile), drops every path that is
    not in the dependency layer (whatever Berth another checkout installed there last) and
    unpacks this checkout's Berth layer on top: the same files as the image's two layers.
    The container's root is read-only, so the shared inodes are never written.
    """
    import json
    import os
    import shutil
    import tarfile

    from berth_dev import images

    for _ in range(3):
        layout, _digest = images.build_runtime()  # cached by content; takes the lock itself
        with images._locked("runtime"):
            if not (layout / "index.json").exists():
                continue  # another checkout's build replaced it between the two calls
            blobs = layout / "blobs" / "sha256"
            index = json.loads((layout / "index.json").read_text())
            manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
            config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
            app = dest / "app.tar"
            os.link(blobs / manifest["layers"][1]["digest"][7:], app)
            dkey = images.deps_key()
            base = set((images.cache_dir() / f"deps-{dkey}.files").read_text().split("\n"))
            rootfs = dest / "rootfs"
            subprocess.run(
                ["cp", "-al", str(images.cache_dir() / f"rootfs-{dkey}"), str(rootfs)], check=True
            )
        break
    else:
        raise RuntimeError("the runtime image kept being rebuilt by another checkout")
    for dirpath, dirnames, filenames in os.walk(rootfs):
        rel = os.path.relpath(dirpath, rootfs)
        for n in list(dirnames):
            if os.path.normpath(os.path.join(rel, n)) not in base:
                p = os.path.join(dirpath, n)
                os.unlink(p) if os.path.islink(p) else shutil.rmtree(p)
                dirnames.remove(n)
        for n in filenames:
            if os.path.normpath(os.path.join(rel, n)) not in base:
                os.unlink(os.path.join(dirpath, n))
    with tarfile.open(app) as tar:
        tar.extractall(rootfs, filter="fully_trusted")
    app.unlink()
    return rootfs, config


def pytest_lib(dest: Path) -> Path:
    """This venv's pytest (pure Python) copied into ``dest``, with a pytest.ini of the
    repository's markers and warnings-as-errors (the venv's plugins are not in the image)."""
    import shutil
    import site

    dest.mkdir(parents=True)
    sp = Path(next(p for p in site.getsitepackages() if p.endswith("site-packages")))
    for name in PYTEST_PACKAGES:
        src = sp / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    for dist in ("pytest", "pluggy", "iniconfig"):  # entry points and versions
        for info in sp.glob(f"{dist}-*.dist-info"):
            shutil.copytree(info, dest / info.name)
    (dest / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers -ra -p no:cacheprovider\n"
        "markers =\n    unit: pure\n    integration: real server\n    e2e: whole loop\n"
        "filterwarnings =\n    error\n    ignore::DeprecationWarning\n"
        "    ignore::PendingDeprecationWarning\n    ignore::ResourceWarning\n"
    )
    return dest


LO_UP_HOOK = """#!/bin/sh
# runc createRuntime hook: bring up loopback in the container's own network namespace
pid=$(sed -n 's/.*"pid":\\([0-9]*\\).*/\\1/p')
exec nsenter -t "$pid" -n ip link set lo up
"""


class RuncContainer:
    """A runc container of an image: read-only root, the image's user, its own network
    namespace with loopback only, a tmpfs /tmp, and the given bind mounts.

    ``run`` waits for the process; ``start`` leaves it running (``exec`` runs a second
    process in it, ``stop`` kills and deletes it)."""

    def __init__(
        self, rootfs: Path, config: dict[str, object], bundle: Path,
        mounts: dict[str, tuple[Path, bool]] | None = None, env: dict[str, str] | None = None,
        tmp_size: str = "1g",
    ) -> None:  # fmt: skip
        import json
        import uuid

        img = config["config"]
        assert isinstance(img, dict)
        bundle.mkdir(parents=True, exist_ok=True)
        self.bundle = bundle
        self.state = bundle / "state"
        self.id = f"berth-t-{uuid.uuid4().hex[:8]}"
        self.entrypoint = list(img.get("Entrypoint", []))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = bundle / "container.log"
        user = str(img.get("User") or "0:0").split(":")
        spec = subprocess.run(
            ["runc", "spec", "--bundle", str(bundle)], capture_output=True, text=True, check=False
        )
        assert spec.returncode == 0, spec.stderr
        hook = bundle / "lo-up.sh"
        hook.write_text(LO_UP_HOOK)
        hook.chmod(0o755)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["root"] = {"path": str(rootfs), "readonly": True}
        cfg["process"]["terminal"] = False
        cfg["process"]["env"] = [*img.get("Env", []), *(f"{k}={v}" for k, v in (env or {}).items())]
        cfg["process"]["cwd"] = "/tmp"
        cfg["process"]["user"] = {"uid": int(user[0]), "gid": int(user[1] if len(user) > 1 else 0)}
        cfg["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", f"size={tmp_size}"]}
        )  # fmt: skip
        for dest, (src, writable) in (mounts or {}).items():
            cfg["mounts"].append(
                {"destination": dest, "type": "bind", "source": str(src),
                 "options": ["rbind", "rw" if writable else "ro", "nosuid", "nodev"]}
            )  # fmt: skip
        cfg["hooks"] = {"createRuntime": [{"path": str(hook), "args": ["lo-up.sh"]}]}
        self.cfg = cfg

    def _write(self, args: list[str]) -> None:
        import json

        self.cfg["process"]["args"] = args
        (self.bundle / "config.json").write_text(json.dumps(self.cfg))

    def run(self, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        self._write(args)
        try:
            return subprocess.run(
                ["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle), self.id],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        finally:
            self._delete()

    def start(self, args: list[str]) -> None:
        self._write(args)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            ["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle), self.id],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def exec(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runc", "--root", str(self.state), "exec", self.id, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def _delete(self) -> None:
        subprocess.run(
            ["runc", "--root", str(self.state), "delete", "--force", self.id],
            capture_output=True, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        self._delete()
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
