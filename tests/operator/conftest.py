"""Fixtures for the operator's integration tests: CRDs installed, the operator running.

The operator runs as a subprocess (`berth operator run`) against the test cluster,
logging to a file under pytest's tmp dir; `operator.restart()` stops and starts it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
BERTH = Path(sys.executable).with_name("berth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """One `berth operator run` subprocess; restartable."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / "operator-0.log"

    def start(self, timeout: float = 60) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"operator-{self.starts}.log"
        port = _free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(BERTH), "operator", "run", "--all-namespaces",
                 "--liveness", f"http://127.0.0.1:{port}/healthz"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: see {self.log_path}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"operator not live after {timeout}s: {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def crds(cluster: Any) -> None:
    """crds/*.yaml applied and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    names = [f"crd/{p.name.removesuffix('.yaml')}" for p in sorted(CRDS.glob("*.yaml"))]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.fixture(scope="session")
def operator(
    cluster: Any, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    # One operator at a time: a dev cluster's own operator (`make up`, or the e2e
    # fixtures) would reconcile the same objects and blur what these tests observe.
    dev_operator = cluster.stop_component("berth-operator")
    op = Operator(Path(cluster.kubeconfig), tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()
    if dev_operator:
        from berth_dev.addons import Addons

        cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
