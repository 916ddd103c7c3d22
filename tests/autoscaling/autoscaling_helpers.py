"""Small helpers for the autoscaler's integration tests (kubectl JSON, polling, manifests)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
LOCAL_NODE = {
    "nodeSelector": {"berth.dev/local-node": "true"},
    "tolerations": [{"key": "berth.dev/local-node", "operator": "Exists", "effect": "NoSchedule"}],
}


def wait_for(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}"
            )
        time.sleep(interval)


def kget(cluster: Any, kind: str, name: str, ns: str | None = None) -> Any:
    args = ["get", kind, name, *(["-n", ns] if ns else []), "-o", "json"]
    proc = cluster.kubectl(*args, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def apply(cluster: Any, manifest: dict[str, Any], ns: str | None = None) -> None:
    args = ["apply", *(["-n", ns] if ns else []), "-f", "-"]
    cluster.kubectl(*args, input=yaml.safe_dump(manifest))


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
