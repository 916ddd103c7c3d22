"""End-to-end fixtures: the dev cluster plus its real node, Prometheus and operator."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def stack(cluster: Any) -> Any:
    """The shared cluster with its addons running (examples are not deployed)."""
    from berth_dev.addons import Addons, operator_available

    if not operator_available():
        pytest.skip("the operator (berth_operator.main) is not available")
    cluster.start_addons(Addons(node=True, prometheus=True, operator=True, examples=False))
    return cluster
