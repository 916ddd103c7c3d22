"""Small helpers for the autoscaler's integration tests (kubectl JSON, polling, manifests)."""

from __future__ import annotations

import json
from typing import Any

from kube_helpers import LOCAL_NODE, apply, kget, wait_for  # noqa: F401 (re-exported)


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ScalingPolicy",
            "metadata": {"name": name, "labels": {"berth.dev/test": "true"}}, "spec": spec}  # fmt: skip


def model(name: str, autoscaling: dict[str, Any], **spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"uri": "file:///models/m.pt", "format": "torchscript"})
    spec.setdefault("resources", {"cpu": "100m", "memory": "64Mi"})
    return {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name}, "spec": {**spec, "autoscaling": autoscaling}}  # fmt: skip


def condition(md: Any, type_: str) -> dict[str, Any]:
    for c in ((md or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def replicas(md: Any) -> int:
    return int(((md or {}).get("spec") or {}).get("replicas", -1))


def events(cluster: Any, ns: str, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    proc = cluster.kubectl("get", "events", "-n", ns, "-o", "json")
    items = json.loads(proc.stdout)["items"]
    return [e for e in items
            if (e.get("involvedObject") or {}).get("name") == name
            and (reason is None or e.get("reason") == reason)]  # fmt: skip
