"""Install Berth with its Helm chart (charts/berth): into the local cluster, with the
operator in-cluster on the real node, or into the cluster $KUBECONFIG names.

helm itself is built from Go modules by hack/build-helm.sh (cached like the control plane).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .state import REPO

CHART = REPO / "charts" / "berth"
BUILD_SCRIPT = REPO / "hack" / "build-helm.sh"
RELEASE = "berth"
NAMESPACE = "berth-system"
LOCAL_NODE_LABEL = "berth.dev/local-node"  # node.py: the real node's label and taint


class ChartError(RuntimeError):
    """helm failed; the message carries its own error."""


def tools_dir() -> Path:
    """helm and kube-score, built once (cached; a cold build takes minutes)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ChartError(f"hack/build-helm.sh failed:\n{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def helm_bin() -> Path:
    return tools_dir() / "helm"


def helm(
    args: Sequence[str], kubeconfig: Path | str | None, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    # helm keeps its caches and repositories out of the user's home
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "berth" / "helm-home"
    env.setdefault("HELM_CACHE_HOME", str(cache / "cache"))
    env.setdefault("HELM_CONFIG_HOME", str(cache / "config"))
    env.setdefault("HELM_DATA_HOME", str(cache / "data"))
    proc = subprocess.run(
        [str(helm_bin()), *args], capture_output=True, text=True, env=env, timeout=timeout,
        check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise ChartError(f"helm {' '.join(args[:2])}: {proc.stderr.strip()[-2000:]}")
    return proc


def local_values(prometheus_url: str) -> dict[str, Any]:
    """Values for the local cluster: the operator on the real node (KWOK nodes run nothing)."""
    return {
        # `make up` runs the gateway as a host process (127.0.0.1:8088): not a second one
        "gateway": {"enabled": False},
        "operator": {
            "prometheusUrl": prometheus_url,
            "nodeSelector": {LOCAL_NODE_LABEL: "true"},
            "tolerations": [
                {"key": LOCAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
            ],
            # the real node has the machine's CPUs as allocatable (2 here) and the examples
            # request one each: the mostly idle operator asks for no CPU of its own
            "resources": {
                "requests": {"cpu": "0", "memory": "64Mi", "ephemeral-storage": "16Mi"},
                "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "64Mi"},
            },
        },
    }


def install(
    kubeconfig: Path | str,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    extra: Sequence[str] = (),
    wait_s: int = 300,
) -> float:
    """`helm upgrade --install` the chart and wait for the operator; the seconds it took."""
    t0 = time.monotonic()
    args = ["upgrade", "--install", release, str(CHART), "--namespace", namespace,
            "--create-namespace", "--wait", f"--timeout={wait_s}s", "--take-ownership"]  # fmt: skip
    if values:
        args += ["--values", "-"]
    proc = subprocess.run(
        [str(helm_bin()), *args, *extra],
        input=json.dumps(dict(values or {})),
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=wait_s + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise ChartError(f"helm upgrade --install {release}: {proc.stderr.strip()[-2000:]}")
    return time.monotonic() - t0
