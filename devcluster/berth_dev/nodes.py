"""Fake GPU nodes for KWOK: a pure builder and a thin create-or-keep step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import GPU_PRODUCT_LABEL, GPU_RESOURCE, KWOK_ANNOTATION, NodePool

POOL_LABEL = "berth.dev/pool"


def node_manifest(pool: NodePool, name: str) -> dict[str, Any]:
    """The Node object KWOK will keep alive; capacity equals allocatable."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"berth-dev-{pool.name}",
        "type": "kwok",
        POOL_LABEL: pool.name,
    }
    capacity = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "pods": str(pool.pods),
        "ephemeral-storage": pool.ephemeral_storage,
    }
    taints: list[dict[str, str]] = []
    if pool.gpus > 0:
        capacity[GPU_RESOURCE] = str(pool.gpus)
        labels["nvidia.com/gpu.present"] = "true"
        labels["nvidia.com/gpu.count"] = str(pool.gpus)
        if pool.product:
            labels[GPU_PRODUCT_LABEL] = pool.product
        if pool.taint_gpu:
            taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "phase": "Running",
        },
    }


def pool_manifests(pools: Iterable[NodePool]) -> list[dict[str, Any]]:
    return [node_manifest(pool, name) for pool in pools for name in pool.node_names()]


def create_fake_nodes(client: Any, pools: Iterable[NodePool]) -> list[str]:
    """Create the nodes that do not exist yet (lightkube sync Client); return all names."""
    from lightkube import operators
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    names = []
    for manifest in pool_manifests(pools):
        name = manifest["metadata"]["name"]
        names.append(name)
        try:
            client.create(Node.from_dict(manifest))
        except ApiError as err:
            if err.status.code != 409:
                raise
            # A node made before pools had ephemeral storage: model pods request some.
            storage = {"ephemeral-storage": manifest["status"]["capacity"]["ephemeral-storage"]}
            client.patch(
                Node.Status, name, {"status": {"capacity": storage, "allocatable": storage}},
                patch_type=PatchType.MERGE,
            )  # fmt: skip
    # Fake nodes of pools the config does not name are left over from a benchmark that was
    # killed before its cleanup: they would take the GPU pods meant for the configured pools.
    wanted = {pool.name for pool in pools}
    stale = [
        str(node.metadata.name)
        for node in client.list(Node, labels={POOL_LABEL: operators.exists()})
        if node.metadata is not None and (node.metadata.labels or {}).get(POOL_LABEL) not in wanted
    ]
    delete_fake_nodes(client, stale)
    return names


def delete_fake_nodes(client: Any, names: Iterable[str]) -> None:
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Node

    for name in names:
        try:
            client.delete(Node, name)
        except ApiError as err:
            if err.status.code != 404:
                raise
