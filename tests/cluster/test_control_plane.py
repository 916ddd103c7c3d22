"""The foundation: a real control plane (apiserver, etcd, controller-manager,
scheduler) with KWOK fake GPU nodes, driven through real clients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Event, Node, Pod

pytestmark = pytest.mark.integration

T = TypeVar("T")
H100 = "NVIDIA-H100-80GB-HBM3"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60, every: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def gpu_deployment(name: str, gpus: int, product: str | None = H100) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "registry.invalid/berth/runtime:test",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if product:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": product}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def pods_of(kube: Any, namespace: str, app: str) -> list[Any]:
    return list(kube.list(Pod, namespace=namespace, labels={"app": app}))


def test_fake_gpu_nodes_are_ready_with_capacity(kube: Any) -> None:
    nodes = {n.metadata.name: n for n in kube.list(Node, labels={"type": "kwok"})}
    gpu = {
        name: (
            n.metadata.labels.get("nvidia.com/gpu.product"),
            n.status.capacity.get("nvidia.com/gpu"),
        )
        for name, n in nodes.items()
    }
    assert gpu["kwok-h100-0"] == (H100, "8")
    assert gpu["kwok-h100-1"] == (H100, "8")
    assert gpu["kwok-a100-0"] == ("NVIDIA-A100-SXM4-40GB", "8")
    assert gpu["kwok-cpu-0"] == (None, None)
    taints = [(t.key, t.value, t.effect) for t in nodes["kwok-h100-0"].spec.taints]
    assert taints == [("nvidia.com/gpu", "present", "NoSchedule")]
    assert not nodes["kwok-cpu-0"].spec.taints
    for n in nodes.values():
        ready = [c.status for c in n.status.conditions if c.type == "Ready"]
        assert ready == ["True"], n.metadata.name


def test_gpu_pod_is_bound_to_h100_node_and_running(kube: Any, cluster: Any, namespace: str) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(gpu_deployment("one-gpu", 1))
    )

    def running() -> Any:
        pods = pods_of(kube, namespace, "one-gpu")
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = wait_for("the GPU pod to run", running)
    node = kube.get(Node, pod.spec.nodeName)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert pod.spec.nodeName.startswith("kwok-h100-")
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.status.podIP, "KWOK gives running pods an IP"


def test_sixteen_gpus_stay_pending_with_insufficient_gpu(
    kube: Any, cluster: Any, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(gpu_deployment("big", 16))
    )
    pod = wait_for("the 16-GPU pod", lambda: (pods_of(kube, namespace, "big") or [None])[0])

    def failed_scheduling() -> Any:
        events = kube.list(
            Event, namespace=namespace, fields={"involvedObject.name": pod.metadata.name}
        )
        return [e for e in events if e.reason == "FailedScheduling"]

    events = wait_for("a FailedScheduling event", failed_scheduling)
    assert "Insufficient nvidia.com/gpu" in events[0].message
    current = kube.get(Pod, pod.metadata.name, namespace=namespace)
    assert current.status.phase == "Pending"
    assert not current.spec.nodeName
    cond = [c for c in current.status.conditions or [] if c.type == "PodScheduled"]
    assert cond and cond[0].status == "False" and cond[0].reason == "Unschedulable"


def test_deleting_a_deployment_garbage_collects_replicaset_and_pods(
    kube: Any, cluster: Any, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(gpu_deployment("gc", 1)))
    wait_for("a pod", lambda: pods_of(kube, namespace, "gc"))
    assert list(kube.list(ReplicaSet, namespace=namespace))
    kube.delete(Deployment, "gc", namespace=namespace)

    def gone() -> bool:
        try:
            kube.get(Deployment, "gc", namespace=namespace)
            return False
        except ApiError:
            pass
        return not list(kube.list(ReplicaSet, namespace=namespace)) and not pods_of(
            kube, namespace, "gc"
        )

    wait_for("ReplicaSet and pods to be garbage-collected", gone, timeout=90)


def test_kubectl_version_matches_server(cluster: Any) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    client, server = out["clientVersion"], out["serverVersion"]
    assert client["gitVersion"] == server["gitVersion"]
    assert server["gitVersion"].startswith("v1.36.")
    assert (server["major"], server["minor"]) == ("1", "36")
