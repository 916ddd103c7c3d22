"""Fixtures for the gateway's cluster tests: the dev cluster with its real node, Prometheus,
the dev gateway and the operator (given the gateway's address, as `make up` does), and
private gateway processes with their own settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

RUNTIME = str(Path(sys.executable).parent / "berth-runtime")


@pytest.fixture(scope="session")
def _gateway_stack_started(cluster: Any) -> Any:
    from berth_dev.addons import Addons
    from berth_dev.state import running_components

    cluster.start_addons(Addons(node=True, prometheus=True, operator=False, examples=False))
    if "berth-gateway" not in running_components(cluster.paths):
        cluster.stop_component("berth-operator")  # started without the gateway's address
    cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
    return cluster


@pytest.fixture(scope="module")
def gateway_stack(_gateway_stack_started: Any) -> Any:
    """The stack, with the dev operator running for this module (a test of another folder,
    run before it in any order, may have stopped it to run its own)."""
    from kube_helpers import dev_operator_running

    dev_operator_running(_gateway_stack_started)
    return _gateway_stack_started


@pytest.fixture(scope="module")
def gateway_url(gateway_stack: Any) -> str:
    from berth_dev.gateway import url

    base = url(gateway_stack)
    assert base, "the dev gateway did not record its address"
    wait_ready(base)
    return base


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"gateway {base} not ready after {timeout:.0f} s")
        time.sleep(0.2)


@pytest.fixture
def private_gateway(gateway_stack: Any, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a gateway process with BERTH_GATEWAY_* settings; returns its base URL."""
    from berth_dev.state import free_port

    procs: list[subprocess.Popen[bytes]] = []

    def start(**settings: object) -> str:
        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(gateway_stack.paths.kubeconfig)}
        env.update({f"BERTH_GATEWAY_{k.upper()}": str(v) for k, v in settings.items()})
        log = (tmp_path / f"gateway-{port}.log").open("wb")
        procs.append(subprocess.Popen(
            [RUNTIME, "gateway", "--port", str(port)], env=env, stdout=log, stderr=log,
        ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        return base

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)
