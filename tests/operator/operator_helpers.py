"""Small helpers for the operator's integration tests: kubectl JSON, polling, manifests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 60, interval: float = 0.25, what: str = "") -> T:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        time.sleep(interval)


def get(cluster: Any, kind: str, name: str | None = None, ns: str | None = None) -> Any:
    """`kubectl get -o json`, or None when not found."""
    args = ["get", kind] + ([name] if name else []) + (["-n", ns] if ns else []) + ["-o", "json"]
    proc = cluster.kubectl(*args, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def apply(cluster: Any, manifest: dict[str, Any] | str, ns: str, check: bool = True) -> Any:
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    return cluster.kubectl("apply", "-n", ns, "-f", "-", input=text, check=check)


def model(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("model", {"uri": "file:///models/m.pt", "format": "torchscript"})
    return {
        "apiVersion": "serving.berth.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(md: Any, type_: str) -> dict[str, Any]:
    for c in ((md or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def events(cluster: Any, ns: str, name: str) -> list[dict[str, Any]]:
    data = get(cluster, "events", ns=ns) or {"items": []}
    return [e for e in data["items"] if (e.get("involvedObject") or {}).get("name") == name
            and (e.get("involvedObject") or {}).get("kind") == "ModelDeployment"]  # fmt: skip
