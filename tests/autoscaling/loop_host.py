"""The autoscaler loop (berth_operator.autoscaling.loop.Autoscaler) driven against a real
Prometheus without Kubernetes: `Host` stands in for the reconciler's side only (the
Kopf indexes it reads models and pods from, the status block it hands back), so a test
reads exactly what the operator would write to status.autoscaling and the conditions.
The queries, the Prometheus client and the decision are the product's own code.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from berth_operator.autoscaling.loop import Autoscaler
from berth_operator.settings import AutoscalingSettings
from berth_operator.status import PodObs

Key = tuple[str, str]


class Host:
    def __init__(self) -> None:
        self.indexes: dict[str, Any] = {"model_index": {}, "pod_index": {}, "policy_index": {}}
        self.autoscaling: dict[Key, dict[str, Any]] = {}
        self.kube = None
        self.events: list[tuple[str, str, str]] = []

    def add(self, ns: str, name: str, autoscaling: dict[str, Any], replicas: int = 1,
            ready: int = 1) -> Key:  # fmt: skip
        key = (ns, name)
        md = {"metadata": {"namespace": ns, "name": name},
              "spec": {"replicas": replicas, "autoscaling": autoscaling}}  # fmt: skip
        self.indexes["model_index"][key] = [md]
        self.indexes["pod_index"][key] = [
            PodObs(name=f"{name}-{i}", phase="Running", ready=True) for i in range(ready)
        ]
        return key

    # what the loop calls on the reconciler
    def models(self) -> list[Key]:
        return list(self.indexes["model_index"])

    def model(self, key: Key) -> dict[str, Any] | None:
        found = self.indexes["model_index"].get(key)
        return dict(found[0]) if found else None

    def pods(self, key: Key) -> list[PodObs]:
        return list(self.indexes["pod_index"].get(key) or [])

    def terminating(self, namespace: str) -> bool:
        return False

    def schedule_status(self, key: Key, delay: float | None = None) -> None:
        pass

    def event_for(self, md: Any, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def status(self, key: Key) -> dict[str, Any]:
        return dict(self.autoscaling[key]["status"])

    def condition(self, key: Key, type_: str) -> dict[str, Any]:
        return next(c for c in self.autoscaling[key]["conditions"] if c["type"] == type_)


async def one_tick(host: Host, url: str, **settings: Any) -> Autoscaler:
    """A fresh autoscaler (no history), one tick against Prometheus at `url`."""
    s = replace(AutoscalingSettings(prometheus_url=url), **settings)
    scaler = Autoscaler(host, s)  # type: ignore[arg-type]
    try:
        await scaler.tick()
    finally:
        for task in list(scaler._inflight.values()):  # the policy-status write: no API here
            task.cancel()
        await scaler.close()
    return scaler
