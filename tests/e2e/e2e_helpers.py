"""Helpers for the end-to-end tests that run real model pods on the dev cluster's real node:
a namespace with a `models` claim, ModelDeployment manifests placed on the node, waiting
for a Ready pod, and the address of the dev gateway."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kube_helpers import LOCAL_NODE, kget, wait_for

GROUP = "serving.berth.dev"


@contextlib.contextmanager
def module_namespace(cluster: Any, stem: str) -> Iterator[str]:
    """A namespace for one test module (its models and Secrets), deleted at the end."""
    ns = f"{stem}-{os.getpid()}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", ns, "berth.dev/test=true")
    try:
        yield ns
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def weights_dir(cluster: Any) -> Path:
    """The example weights (MiniLM, the small CNN, the tiny chat model), written once per
    dev cluster and only read by the pods that mount them (ReadOnlyMany)."""
    from berth_dev.weights import copy_minilm, write_chat, write_cnn

    root = Path(cluster.paths.root) / "test-weights"
    root.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        copy_minilm(root)
        write_cnn(root)
        write_chat(root)
    return root


@contextlib.contextmanager
def models_claim(cluster: Any, ns: str) -> Iterator[Path]:
    """The `models` claim of `ns` on the shared example weights; the PV goes at the end."""
    from berth_dev.examples import claim_manifests

    root = weights_dir(cluster)
    pv = f"berth-e2e-{ns}"[:60]
    manifests = claim_manifests(ns, root, pv, {"berth.dev/test": "true"})
    cluster.kubectl("apply", "-f", "-", input=manifests)
    try:
        yield root
    finally:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)


def model(name: str, uri: str, fmt: str, cpu: str = "250m", **spec: Any) -> dict[str, Any]:
    """A ModelDeployment placed on the real node (one replica unless `spec` says otherwise)."""
    body: dict[str, Any] = {
        "model": {"uri": uri, "format": fmt},
        "resources": {"cpu": cpu, "memory": "1536Mi"},
        "scheduling": LOCAL_NODE,
        "replicas": 1,
    }
    model_extra = spec.pop("model_extra", {})
    body["model"].update(model_extra)
    body.update(spec)
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name}, "spec": body}  # fmt: skip


def pods_of(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l",
                                     f"app.kubernetes.io/instance={name}", "-o", "json").stdout)  # fmt: skip
    return [p for p in out["items"] if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def ready_pod(cluster: Any, ns: str, name: str, timeout: float = 300) -> dict[str, Any]:
    """The model's Ready pod on the real node (a cold start on 2 shared cores: minutes)."""

    def one() -> dict[str, Any] | None:
        return next((p for p in pods_of(cluster, ns, name) if is_ready(p)), None)

    pod: dict[str, Any] = wait_for(one, timeout, what=f"a Ready pod of {ns}/{name}", interval=0.5)
    assert pod["spec"]["nodeName"] == "local-node-0", pod["spec"].get("nodeName")
    return pod


def pod_url(pod: dict[str, Any]) -> str:
    return f"http://{pod['status']['podIP']}:8080"


def md_condition(cluster: Any, ns: str, name: str, kind: str) -> dict[str, Any] | None:
    md = kget(cluster, f"modeldeployments.{GROUP}", name, ns) or {}
    conds = (md.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), None)


@dataclass(frozen=True)
class GatewayClient:
    """How a client reaches the models of one namespace through the dev gateway."""

    base: str  # http://127.0.0.1:<port>/ns/<namespace>: the OpenAI base is base + "/v1"
    header_items: tuple[tuple[str, str], ...] = ()  # sent with every request

    @property
    def headers(self) -> dict[str, str]:
        """A fresh dict each time (tritonclient adds its own headers to the one it is given)."""
        return dict(self.header_items)

    @property
    def host_port_path(self) -> str:
        """tritonclient's form of the address: host:port/<base path>, no scheme."""
        return self.base.removeprefix("http://")


def gateway_client(cluster: Any, ns: str) -> GatewayClient:
    """The one place the tests build the gateway's address and request headers: the dev
    gateway's URL with the namespace prefix, and no headers today (a gateway that asks
    clients for a token gets it added here, once, for every test)."""
    from berth_dev.gateway import url

    base = url(cluster)
    assert base, "the dev gateway is not running (no berth-gateway URL in the dev state)"
    return GatewayClient(base=f"{base}/ns/{ns}", header_items=())


def container_pid(cluster: Any, pod: dict[str, Any]) -> int:
    """The host pid of the pod's first container (from its cgroup on the real node)."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[-1]
    base = Path("/sys/fs/cgroup/pids") / str(cluster.state["node"]["cgroupRoot"]).lstrip("/")
    for d in base.rglob(f"*{cid}*"):
        pids = (d / "cgroup.procs").read_text().split()
        if pids:
            return int(pids[0])
    raise AssertionError(f"no cgroup for container {cid} under {base}")


def process_env(pid: int) -> dict[str, str]:
    """The environment a process was started with (what the kubelet gave the container)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs}
