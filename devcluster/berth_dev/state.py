"""What every part of the dev cluster shares: its errors, paths, state file, ports.

The lowest module of berth_dev (it imports none of the others but processes), so that
the control plane (cluster.py), the node (node.py), the addons and the examples use
one set of helpers without importing each other.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import pid_alive

REPO = Path(__file__).resolve().parent.parent.parent
HACK_DIR = REPO / "hack"  # the build scripts


class DevClusterError(RuntimeError):
    """A step of the dev cluster failed; the message names the step and the log."""


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free on `host`, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            # as the servers bind: a port in TIME_WAIT after a restart is free for them
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DevClusterError(f"no free port on {host}")


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def read_state(paths: Paths) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(paths.state.read_text())
        return data
    except (OSError, ValueError):
        return {}


def write_state(paths: Paths, state: dict[str, Any]) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(paths.state)


def running_components(paths: Paths) -> dict[str, int]:
    """Components recorded in state.json whose process is still alive."""
    state = read_state(paths)
    alive = {}
    for name, info in state.get("components", {}).items():
        if pid_alive(int(info["pid"]), info.get("marker")):
            alive[name] = int(info["pid"])
    return alive


def http_ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
