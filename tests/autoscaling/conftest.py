"""Fixtures for the autoscaler's integration tests: the dev cluster with its real node,
a real Prometheus, and the dev cluster's operator (restarted so that it is given the
Prometheus URL, as `make up` does)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def _scaling_stack_started(cluster: Any) -> Any:
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=True, prometheus=True, operator=False, examples=False))
    cluster.stop_component("berth-operator")  # an operator started without Prometheus
    cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
    return cluster


@pytest.fixture(scope="module")
def scaling_stack(_scaling_stack_started: Any) -> Any:
    """The stack, with the dev operator running for this module (a test of another folder,
    run before it in any order, may have stopped it to run its own)."""
    from kube_helpers import dev_operator_running

    dev_operator_running(_scaling_stack_started)
    return _scaling_stack_started
