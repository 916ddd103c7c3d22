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


class OperatorHolder:
    """The one test operator of the session: started when a test asks for `operator` (the
    dev cluster's own operator stopped first, so one operator acts), stopped as soon as
    the next test does not ask for it (`pytest_runtest_teardown` below), so no test outside
    this folder, in any order, ever runs beside it."""

    def __init__(self, cluster: Any, log_dir: Path) -> None:
        self.cluster = cluster
        self.op = Operator(Path(cluster.kubeconfig), log_dir)

    def acquire(self) -> Operator:
        if self.op.proc is None or self.op.proc.poll() is not None:
            from kube_helpers import operator_stopped

            operator_stopped(self.cluster)  # the dev operator, or any leaked one
            self.op.start()
        return self.op

    def release(self) -> None:
        self.op.stop()


_holder: list[OperatorHolder] = []


@pytest.fixture(scope="session")
def _operator_holder(
    cluster: Any, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorHolder]:
    holder = OperatorHolder(cluster, tmp_path_factory.mktemp("operator"))
    _holder.append(holder)
    try:
        yield holder
    finally:
        _holder.remove(holder)
        holder.release()


@pytest.fixture
def operator(_operator_holder: OperatorHolder) -> Operator:
    """This folder's own `berth operator run` (restartable), the only operator running."""
    return _operator_holder.acquire()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _holder and (nextitem is None or "operator" not in nextitem.fixturenames):
        _holder[0].release()
