"""`berth dev` as a user runs it: up, a second up, status, an external KUBECONFIG, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

BERTH = str(Path(sys.executable).parent / "berth")
CONTROL_PLANE_ONLY = [
    "--no-node",
    "--no-prometheus",
    "--no-operator",
    "--no-examples",
]


def berth(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BERTH, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_external_kubeconfig_is_respected(cluster: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BERTH_DEV_DIR": str(tmp_path / "dev"),
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    out = berth("dev", "up", *CONTROL_PLANE_ONLY, env=env)
    assert out.returncode == 0, out.stderr
    assert "already names a reachable cluster" in out.stdout
    assert not processes_mentioning(str(tmp_path / "dev"))


def test_up_second_up_status_down_leaves_nothing(cluster: Any, tmp_path: Path) -> None:
    root = tmp_path / "dev"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["BERTH_DEV_DIR"] = str(root)
    try:
        up = berth("dev", "up", *CONTROL_PLANE_ONLY, env=env)
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={root / 'kubeconfig'}" in up.stdout
        # progress with elapsed time; the API server on the host end of the node link
        assert "kube-apiserver on https://198.1" in up.stderr
        again = berth("dev", "up", *CONTROL_PLANE_ONLY, env=env)
        assert again.returncode == 0
        assert "already running" in again.stdout
        status = json.loads(berth("dev", "status", "--json", env=env).stdout)
        assert status["running"] is True
        comps = status["components"]
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            assert comps[name]["state"] == "running", name
        assert comps["kube-apiserver"]["url"].startswith("https://198.1")
        nodes = subprocess.run(
            [
                str(cluster.bin_dir / "kubectl"),
                "--kubeconfig",
                str(root / "kubeconfig"),
                "get",
                "nodes",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert "node/kwok-h100-0" in nodes
        state = json.loads((root / "state.json").read_text())
        host_ip = state["node"]["hostIP"]  # the API server's; the rest listen on 127.0.0.1
        ports = [
            (host_ip if name == "apiserver" else "127.0.0.1", port)
            for name, port in state["ports"].items()
            if port
        ]
    finally:
        down = berth("dev", "down", env=env)
    assert down.returncode == 0
    assert not processes_mentioning(str(root)), "berth dev down left processes behind"
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    for address, port in ports:
        hexaddr = "".join(f"{int(o):02X}" for o in reversed(address.split(".")))
        entry = f"{hexaddr}:{port:04X} 00000000:0000 0A"
        assert entry not in listening, f"{address}:{port} still listening"
    status = berth("dev", "status", "--json", env=env)
    assert status.returncode == 3
