"""End-to-end fixtures: the dev cluster plus node agent, Prometheus and operator."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def stack(cluster: Any) -> Any:
    """The shared cluster with its addons running (examples are not deployed)."""
    from berth_dev.addons import Addons, operator_available

    if not operator_available():
        pytest.skip("the operator (berth_operator.main) is not available")
    cluster.start_addons(Addons(agent=True, prometheus=True, operator=True, examples=False))
    return cluster


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
