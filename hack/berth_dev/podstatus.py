"""Container run states -> a Pod's status, as the kubelet reports it (pure)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def rfc3339(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


@dataclass
class ContainerRun:
    """What the agent knows about one container of a pod."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"  # waiting/terminated reason
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    pid: int | None = None
    last: dict[str, Any] | None = field(default=None)  # lastState.terminated

    def terminated_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "exitCode": self.exit_code if self.exit_code is not None else 0,
            "reason": self.reason,
            "startedAt": rfc3339(self.started_at) if self.started_at else None,
            "finishedAt": rfc3339(self.finished_at) if self.finished_at else None,
            "containerID": self.container_id,
        }
        if self.signal:
            d["signal"] = self.signal
        if self.message:
            d["message"] = self.message
        return {k: v for k, v in d.items() if v is not None}

    @property
    def container_id(self) -> str:
        return f"berth-agent://{self.pid}" if self.pid else ""

    def status(self) -> dict[str, Any]:
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": rfc3339(self.started_at)}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated_dict()}
        else:
            waiting: dict[str, Any] = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.state == "running" and self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last} if self.last else {},
        }
        if self.container_id and self.state != "waiting":
            out["containerID"] = self.container_id
        return out


def exit_reason(exit_code: int | None, signal: int | None) -> str:
    """The kubelet's terminated reasons: Completed for 0, Error otherwise (OOMKilled never)."""
    return "Completed" if exit_code == 0 and not signal else "Error"


def phase(pod: Mapping[str, Any], runs: Sequence[ContainerRun]) -> str:
    policy = pod["spec"].get("restartPolicy", "Always")
    if any(r.state == "running" for r in runs):
        return "Running"
    if runs and all(r.state == "terminated" for r in runs) and policy != "Always":
        if all(r.exit_code == 0 for r in runs):
            return "Succeeded"
        if policy == "Never":
            return "Failed"
    if any(r.restart_count > 0 or r.started_at for r in runs):
        return "Running"
    return "Pending"


def _condition(
    ctype: str, ok: bool, old: Mapping[str, Mapping[str, Any]], now: str, reason: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = old.get(ctype)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    cond: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }
    if reason and not ok:
        cond["reason"] = reason
    return cond


def pod_status(
    pod: Mapping[str, Any],
    runs: Sequence[ContainerRun],
    *,
    pod_ip: str,
    host_ip: str,
    start_time: float,
    now: float | None = None,
) -> dict[str, Any]:
    """The pod's full status (except PodScheduled, which is the scheduler's)."""
    stamp = rfc3339(now)
    old = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    ready = bool(runs) and all(r.ready for r in runs)
    not_ready = [r.name for r in runs if not r.ready]
    reason = "ContainersNotReady" if not_ready else ""
    conditions = [
        _condition("PodReadyToStartContainers", bool(pod_ip), old, stamp),
        _condition("Initialized", True, old, stamp),
        _condition("Ready", ready, old, stamp, reason),
        _condition("ContainersReady", ready, old, stamp, reason),
    ]
    if not_ready:
        msg = f"containers with unready status: [{' '.join(not_ready)}]"
        for c in conditions[2:]:
            c["message"] = msg
    if "PodScheduled" in old:
        conditions.append(dict(old["PodScheduled"]))
    status: dict[str, Any] = {
        "phase": phase(pod, runs),
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": rfc3339(start_time),
        "containerStatuses": [r.status() for r in runs],
        "qosClass": (pod.get("status") or {}).get("qosClass") or "BestEffort",
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
