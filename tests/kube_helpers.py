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


# -- who runs the operator ---------------------------------------------------------------
# Tests say what they need: `operator_stopped` (no operator of this cluster runs: a test
# starts its own, or checks that a standby takes over) or `dev_operator_running` (the dev
# cluster's own operator, given Prometheus and the gateway). Both are cheap when the state
# is already right, so a fixture can call them before every test whatever ran before it.
_stopped_dev_operator: list[bool] = []  # the dev operator ran when a test first stopped it


def operator_pids(cluster: Any) -> list[int]:
    """Host processes running `berth operator run` against this cluster's kubeconfig."""
    import os
    from pathlib import Path

    want = f"KUBECONFIG={cluster.kubeconfig}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"operator" not in argv or b"run" not in argv:
                continue
            if not any(a.endswith(b"berth") for a in argv[:2]):
                continue
            if want in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return pids


def operator_stopped(cluster: Any) -> None:
    """No operator of this cluster runs: the dev one (host or in-cluster) is stopped and
    no other host process (say a test's own, leaked) reconciles behind the test's back."""
    from berth_dev.addons import in_cluster_operator_replicas
    from berth_dev.state import running_components

    if "berth-operator" in running_components(cluster.paths) or in_cluster_operator_replicas(
        cluster
    ):
        _stopped_dev_operator.append(True)
        cluster.stop_component("berth-operator")
    left = operator_pids(cluster)
    assert not left, f"operator processes still reconcile this cluster: pids {left}"


def dev_operator_running(cluster: Any) -> None:
    """The dev cluster's operator runs as `make up` starts it (host process, with the
    Prometheus and gateway addresses it records); it is started if a test stopped it."""
    from berth_dev.addons import Addons
    from berth_dev.state import running_components

    if "berth-operator" not in running_components(cluster.paths):
        cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))


def restore_dev_operator(cluster: Any) -> None:
    """At the end of the session: put back the dev operator that a test stopped."""
    if _stopped_dev_operator:
        _stopped_dev_operator.clear()
        dev_operator_running(cluster)
