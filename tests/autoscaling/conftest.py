"""Fixtures for the autoscaler's integration tests: the dev cluster with its real node,
a real Prometheus, and the dev cluster's operator (restarted so that it is given the
Prometheus URL, as `make up` does)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def scaling_stack(cluster: Any) -> Any:
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=True, prometheus=True, operator=False, examples=False))
    cluster.stop_component("berth-operator")  # an operator started without Prometheus
    cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
    return cluster
