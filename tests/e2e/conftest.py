"""End-to-end fixtures: the dev cluster plus its real node, Prometheus and operator."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def stack(cluster: Any) -> Any:
    """The shared cluster with its addons running (examples are not deployed), the dev
    operator among them: started again for each module if a test elsewhere stopped it.
    A missing part (the operator package, say) fails `start_addons`, naming it."""
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=True, prometheus=True, operator=True, examples=False))
    return cluster
