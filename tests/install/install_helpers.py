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
