"""Shared fixtures: the real local control plane, an API client, a namespace per test.

The control plane starts once per test run, only when a test asks for it, and is
stopped at the end; a cluster already started with `make up` is reused and left running.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CRDS = Path(__file__).resolve().parents[1] / "crds"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    from berth_dev.cluster import DevCluster

    dev = DevCluster()
    started = False
    if not dev.is_running():
        dev.up()
        started = True
    try:
        yield dev
    finally:
        if started and not os.environ.get("BERTH_KEEP_CLUSTER"):
            dev.down(quiet=True)
        elif dev.is_running():
            from kube_helpers import restore_dev_operator

            restore_dev_operator(dev)  # a reused cluster is left as it was found


@pytest.fixture(scope="session")
def crds(cluster: Any) -> None:
    """crds/*.yaml applied and Established (every test that creates Berth objects asks)."""
    names = [f"crd/{p.name.removesuffix('.yaml')}" for p in sorted(CRDS.glob("*.yaml"))]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.fixture(scope="session")
def kube(cluster: Any) -> Any:
    """A lightkube sync Client for the test cluster."""
    return cluster.client()


@pytest.fixture
def namespace(kube: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted after the test."""
    from lightkube.core.exceptions import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:5]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"berth.dev/test": "true"})))
    deadline = time.monotonic() + 30
    while True:
        try:
            kube.get(ServiceAccount, "default", namespace=name)
            break
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    with contextlib.suppress(ApiError):
        kube.delete(Namespace, name)
