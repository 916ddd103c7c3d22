"""The autoscaler on the real control plane (KWOK nodes, the dev operator, the dev
Prometheus): a refused /scale write (AbleToScale=False, FailedUpdateScale, HPA's names),
the policy's fallback floor, and requests held at the gateway keeping a model off zero.

Demand is a `promql` query (vector(N)) or, for the gateway, gateway series written into
the dev Prometheus through its remote-write receiver with the labels the gateway's own
series carry, so no runtime process is needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from autoscaling_helpers import apply, condition, kget, model, policy, replicas, wait_for
from promstack import Prom

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAST = {"windows": {"stableSeconds": 4, "panicSeconds": 2},
        "rates": {"maxScaleUpRate": 10, "maxScaleDownRate": 10}}  # fmt: skip


@pytest.fixture(scope="module")
def stack(cluster: Any) -> Any:
    """Prometheus and an operator that knows it (no real node: pods land on KWOK nodes)."""
    from berth_dev.addons import Addons

    cluster.start_addons(Addons(node=False, prometheus=True, operator=False, examples=False))
    cluster.stop_component("berth-operator")  # one started without Prometheus
    cluster.start_addons(Addons(node=False, prometheus=False, operator=True, examples=False))
    return cluster


def promql(query: str, target: float, lo: int = 1, hi: int = 4, **extra: Any) -> dict[str, Any]:
    return {"minReplicas": lo, "maxReplicas": hi,
            "metric": {"type": "promql", "query": query, "target": target}, **extra}  # fmt: skip


@pytest.fixture
def scaling_policy(stack: Any, namespace: str, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"p-{namespace}"[:60]
    apply(stack, policy(name, **FAST, **getattr(request, "param", {})))
    yield name
    stack.kubectl("delete", "scalingpolicy", name, "--ignore-not-found", check=False)


def md(c: Any, ns: str, name: str) -> Any:
    return kget(c, "md", name, ns)


def deny_scale(ns: str) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy refusing every /scale write in namespace `ns`."""
    name = f"deny-scale-{ns}"[:63]
    labels = {"berth.dev/test": "true"}
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name, "labels": labels},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [
                      {"apiGroups": ["serving.berth.dev"], "apiVersions": ["*"],
                       "operations": ["UPDATE"], "resources": ["modeldeployments/scale"]}]},
                  "validations": [{"expression": "false",
                                   "message": "scale writes are refused here (test policy)"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1",
         "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name, "labels": labels},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {
                      "matchLabels": {"kubernetes.io/metadata.name": ns}}}}},
    ]  # fmt: skip


def test_a_refused_scale_write_is_failed_update_scale(
    stack: Any, namespace: str, scaling_policy: str
) -> None:
    c, ns = stack, namespace
    ref = {"policyRef": {"name": scaling_policy}}
    vap = deny_scale(ns)
    for obj in vap:
        apply(c, obj)
    try:
        apply(c, model("m", promql("vector(10)", 10, **ref)), ns)
        # the policy is in force once a plain `kubectl scale` is refused by it
        wait_for(lambda: "refused here" in c.kubectl("scale", "md", "m", "--replicas=1", "-n",
                 ns, check=False).stderr, 30, "the test policy refusing /scale")  # fmt: skip
        apply(c, model("m", promql("vector(30)", 10, **ref)), ns)  # wants 3
        got = wait_for(lambda: (m := md(c, ns, "m")) and condition(m, "AbleToScale")
                       .get("reason") == "FailedUpdateScale" and m, 30,
                       "AbleToScale=False FailedUpdateScale")  # fmt: skip
        able = condition(got, "AbleToScale")
        assert able["status"] == "False" and "refused here" in able["message"], able
        assert replicas(got) == 1  # nothing written
        assert got["status"]["autoscaling"]["desiredReplicas"] == 3
    finally:
        for obj in reversed(vap):
            c.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"],
                      "--ignore-not-found", check=False)  # fmt: skip
    # the write goes through once the policy is gone, and AbleToScale says so
    got = wait_for(lambda: (m := md(c, ns, "m")) and replicas(m) == 3 and m, 40, "3 replicas")
    wait_for(lambda: condition(md(c, ns, "m"), "AbleToScale").get("reason") == "SucceededRescale",
             20, "AbleToScale=True SucceededRescale")  # fmt: skip
    assert condition(md(c, ns, "m"), "AbleToScale")["status"] == "True"


@pytest.mark.parametrize(
    "scaling_policy", [{"fallback": {"replicas": 3, "afterFailedTicks": 2}}], indirect=True
)
def test_the_fallback_floor_raises_replicas_without_data(
    stack: Any, namespace: str, scaling_policy: str
) -> None:
    c, ns = stack, namespace
    ref = {"policyRef": {"name": scaling_policy}}
    # a series nobody exports: no data, every tick
    apply(c, model("m", promql("sum(never_exported_series)", 1, hi=5, **ref)), ns)
    got = wait_for(lambda: (m := md(c, ns, "m")) and replicas(m) == 3 and m, 40,
                   "the fallback floor of 3 replicas")  # fmt: skip
    active = condition(got, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "MetricsUnavailable"), active
    wait_for(lambda: "fallback floor 3" in md(c, ns, "m")["status"]["autoscaling"]["reason"], 20,
             "the reason naming the fallback floor")  # fmt: skip
    time.sleep(4)  # a few more ticks: the floor holds, never more
    assert replicas(md(c, ns, "m")) == 3


def held(c: Any, ns: str, name: str, count: float) -> None:
    """The gateway's gauge of requests held for model `name` (as the gateway exports it)."""
    p = Prom(c.state["urls"]["prometheus"], None)  # type: ignore[arg-type]
    p.gauge({"__name__": "berth_gateway_requests_held", "namespace": ns, "modeldeployment": name,
             "pod": "berth-gateway-0"}, count)  # fmt: skip


@pytest.mark.parametrize(
    "scaling_policy", [{"idleToZero": {"enabled": True, "afterSeconds": 3}}], indirect=True
)
def test_requests_held_at_the_gateway_keep_a_model_off_zero(
    stack: Any, namespace: str, scaling_policy: str
) -> None:
    c, ns = stack, namespace
    ref = {"policyRef": {"name": scaling_policy}}
    idle = promql("vector(0)", 1, lo=0, hi=2, **ref)  # the model's own metric reads zero
    held(c, ns, "waiting", 2)
    apply(c, model("waiting", idle), ns)
    apply(c, model("idle", idle), ns)
    # the control: the same model without held requests goes to zero
    wait_for(lambda: replicas(md(c, ns, "idle")) == 0, 40, "the idle model at zero")
    deadline = time.monotonic() + 8  # more than afterSeconds + the stable window
    while time.monotonic() < deadline:
        assert replicas(md(c, ns, "waiting")) == 1, md(c, ns, "waiting")["status"]
        time.sleep(0.5)
    # a model already at zero: held requests wake it (and it is not written back to zero)
    held(c, ns, "idle", 1)
    got = wait_for(lambda: (m := md(c, ns, "idle")) and replicas(m) == 1 and m, 30,
                   "the idle model woken by held requests")  # fmt: skip
    assert condition(got, "ScalingActive").get("reason") in ("GatewayDemand", "ValidMetricFound")
