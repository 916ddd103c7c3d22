"""Polling, kubectl JSON and the real node's placement, shared by the cluster tests' helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
# Placement on the dev cluster's real node (local-node-0): model pods that must really run.
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
