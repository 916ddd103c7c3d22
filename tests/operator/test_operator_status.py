"""Pure status: observations -> exact status and conditions."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator import status
from berth_operator.settings import Settings
from berth_operator.status import DeploymentObs, PodObs

pytestmark = pytest.mark.unit

S = Settings()
T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z"
SCHED_MSG = (
    "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
    "3 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available: "
    "4 No preemption victims found for incoming pod."
)


def md(replicas: int = 1, generation: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {"model": {"uri": "file:///m", "format": "torchscript"}, "replicas": replicas,
                 **spec},
    }  # fmt: skip


def dep(replicas: int = 1, ready: int = 1, updated: int = 1, current: int = 1,
        generation: int = 1, observed: int = 1, **kw: Any) -> DeploymentObs:  # fmt: skip
    return DeploymentObs(generation=generation, observed_generation=observed,
                         spec_replicas=replicas, replicas=current, ready_replicas=ready,
                         updated_replicas=updated, available_replicas=ready, **kw)  # fmt: skip


def conds(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


def test_ready_status_exact() -> None:
    st = status.compute(md(), dep(), [PodObs("p", "Running", ready=True)], S, now=T0)
    assert st == {
        "observedGeneration": 2,
        "replicas": 1,
        "readyReplicas": 1,
        "desiredReplicas": 1,
        "ready": "1/1",
        "selector": "app.kubernetes.io/instance=m,app.kubernetes.io/name=berth-runtime",
        "url": "http://m.ns.svc.cluster.local",
        "modelName": "m",
        "auth": "Disabled",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Serving",
             "message": "1/1 replicas ready", "observedGeneration": 2, "lastTransitionTime": T0},
            {"type": "Progressing", "status": "False", "reason": "RolloutComplete",
             "message": "1/1 replicas updated and ready", "observedGeneration": 2,
             "lastTransitionTime": T0},
            {"type": "Degraded", "status": "False", "reason": "Healthy",
             "message": "no problem observed", "observedGeneration": 2, "lastTransitionTime": T0},
        ],
    }  # fmt: skip


unsched = PodObs("p", unschedulable=True, scheduler_message=SCHED_MSG)
# (md, deployment, pods, invalid, expected {type: (status, reason)}) -- why
CASES = [
    # No Deployment yet: creating.
    (md(), None, [], None,
     {"Ready": ("False", "Starting"), "Progressing": ("True", "Creating"),
      "Degraded": ("False", "Healthy")}),
    # Pods exist but are not ready yet.
    (md(), dep(ready=0), [PodObs("p", "Running")], None,
     {"Ready": ("False", "Starting"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("False", "Healthy")}),
    # The scheduler says no GPU fits: InsufficientGPU on Ready and Degraded.
    (md(), dep(ready=0), [unsched], None,
     {"Ready": ("False", "InsufficientGPU"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("True", "InsufficientGPU")}),
    # Unschedulable for another reason (taints, selector): Unschedulable.
    (md(), dep(ready=0), [PodObs("p", unschedulable=True,
                                 scheduler_message="0/4 nodes are available: 4 node(s) had "
                                 "untolerated taint {x: y}.")], None,
     {"Ready": ("False", "Unschedulable"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("True", "Unschedulable")}),
    # A pod being deleted does not count.
    (md(), dep(), [PodObs("p", ready=True),
                   PodObs("old", unschedulable=True, deleting=True, scheduler_message="x")], None,
     {"Ready": ("True", "Serving"), "Progressing": ("False", "RolloutComplete"),
      "Degraded": ("False", "Healthy")}),
    # Crash loop while loading the model.
    (md(), dep(ready=0), [PodObs("p", "Running", waiting_reason="CrashLoopBackOff")], None,
     {"Ready": ("False", "ModelLoadFailed"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("True", "ModelLoadFailed")}),
    (md(), dep(ready=0), [PodObs("p", waiting_reason="ImagePullBackOff")], None,
     {"Ready": ("False", "ImagePullFailed"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("True", "ImagePullFailed")}),
    # Scaled up by kubectl scale: Deployment not yet at 3.
    (md(replicas=3), dep(replicas=1), [], None,
     {"Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("False", "Healthy")}),
    # A new spec is rolling: old and new pods both exist.
    (md(), dep(current=2, updated=1, ready=1), [], None,
     {"Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("False", "Healthy")}),
    # Deployment controller has not seen the new generation yet.
    (md(), dep(generation=3, observed=2), [], None,
     {"Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
      "Degraded": ("False", "Healthy")}),
    (md(), dep(ready=0, deadline_exceeded=True, message="ReplicaSet m-1 has timed out"), [], None,
     {"Ready": ("False", "ProgressDeadlineExceeded"),
      "Progressing": ("False", "ProgressDeadlineExceeded"),
      "Degraded": ("True", "ProgressDeadlineExceeded")}),
    # Autoscaled to zero: not Ready (nothing serves right now; the message says who wakes it).
    (md(replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2}),
     dep(replicas=0, ready=0, updated=0, current=0), [], None,
     {"Ready": ("False", "ScaledToZero"), "Progressing": ("False", "RolloutComplete"),
      "Degraded": ("False", "Healthy")}),
    # Zero by hand: not Ready.
    (md(replicas=0), dep(replicas=0, ready=0, updated=0, current=0), [], None,
     {"Ready": ("False", "ScaledToZero"), "Progressing": ("False", "RolloutComplete"),
      "Degraded": ("False", "Healthy")}),
    # Spec the operator cannot render.
    (md(), None, [], "spec.scheduling.nodeSelector: contradicts",
     {"Ready": ("False", "InvalidSpec"), "Progressing": ("False", "InvalidSpec"),
      "Degraded": ("True", "InvalidSpec")}),
]  # fmt: skip


@pytest.mark.parametrize(("m", "d", "pods", "invalid", "expected"), CASES)
def test_conditions(m: Any, d: Any, pods: Any, invalid: Any, expected: Any) -> None:
    assert conds(status.compute(m, d, pods, S, invalid=invalid, now=T0)) == expected


@pytest.mark.parametrize(
    ("gateway", "m", "url", "words"),
    [
        # no gateway: the Service's address; at zero, nothing wakes an autoscaled model
        (
            "",
            md(replicas=0, autoscaling={"minReplicas": 0, "maxReplicas": 2}),
            "http://m.ns.svc.cluster.local",
            "no gateway is configured",
        ),
        # a gateway: the model's address through it, and it wakes the model
        (
            "http://gw.berth-system:8080/",
            md(replicas=0, autoscaling={"minReplicas": 0}),
            "http://gw.berth-system:8080/ns/ns",
            "the gateway (http://gw.berth-system:8080/) holds",
        ),
        # zero by hand, with a gateway: it wakes that one too
        ("http://gw", md(replicas=0), "http://gw/ns/ns", "spec.replicas is 0; the gateway"),
    ],
)
def test_url_and_zero_message_with_and_without_gateway(
    gateway: str, m: Any, url: str, words: str
) -> None:
    from dataclasses import replace

    from berth_operator.settings import GatewaySettings

    settings = replace(S, gateway=GatewaySettings(url=gateway))
    st = status.compute(m, dep(replicas=0, ready=0, updated=0, current=0), [], settings, now=T0)
    assert st["url"] == url
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ScaledToZero" and words in ready["message"], ready["message"]


def test_scheduler_message_is_kept_verbatim() -> None:
    st = status.compute(md(), dep(ready=0), [unsched], S, now=T0)
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["message"] == SCHED_MSG


def test_last_transition_time_kept_while_status_stays() -> None:
    first = status.compute(md(), dep(ready=0), [], S, now=T0)
    second = status.compute(md(), dep(ready=0), [unsched], S, previous=first, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    # Ready stays False (reason changes): time kept; Degraded flips: new time.
    assert times == {"Ready": T0, "Progressing": T0, "Degraded": T1}
    assert [c["type"] for c in status.condition_changes(first, second)] == ["Ready", "Degraded"]
    assert status.same_status(second, status.compute(md(), dep(ready=0), [unsched], S,
                                                     previous=second, now=T1))  # fmt: skip
    assert not status.same_status(first, second)


def test_observe_pod_and_deployment() -> None:
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False",
                            "reason": "Unschedulable", "message": SCHED_MSG}],
        },
    }  # fmt: skip
    assert status.observe_pod(pod) == PodObs("p", "Pending", unschedulable=True,
                                             scheduler_message=SCHED_MSG)  # fmt: skip
    running = {
        "metadata": {"name": "q", "deletionTimestamp": "x"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff",
                                                                "message": "back-off"}}}]},
    }  # fmt: skip
    assert status.observe_pod(running) == PodObs("q", "Running", ready=True, deleting=True,
                                                 waiting_reason="CrashLoopBackOff",
                                                 waiting_message="back-off")  # fmt: skip
    deployment = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": 4, "replicas": 3, "readyReplicas": 2,
                   "updatedReplicas": 3, "availableReplicas": 2,
                   "conditions": [{"type": "Progressing", "status": "True",
                                   "reason": "ReplicaSetUpdated", "message": "m"}]},
    }  # fmt: skip
    assert status.observe_deployment(deployment) == DeploymentObs(4, 4, 3, 3, 2, 3, 2, False, "m")


def test_first_status_is_not_a_change_unless_degraded() -> None:
    # A new model: its children's "Created" Events say enough; only trouble is news.
    fine = status.compute(md(), None, [], S, now=T0)
    assert status.condition_changes(None, fine) == []
    stuck = status.compute(md(), dep(ready=0), [unsched], S, now=T0)
    assert [c["type"] for c in status.condition_changes({}, stuck)] == ["Degraded"]
