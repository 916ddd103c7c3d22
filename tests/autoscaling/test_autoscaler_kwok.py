"""The autoscaler against the real control plane and a real Prometheus, on KWOK's fake
nodes (no processes): policies, bad queries, Prometheus outages and GPU shortages.

Demand comes from `promql` queries such as vector(40): a real query, answered by the
real Prometheus, that stands for load, so these tests need no runtime processes.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from autoscaling_helpers import apply, condition, events, kget, model, policy, replicas, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAST = {"windows": {"stableSeconds": 6, "panicSeconds": 2},
        "rates": {"maxScaleUpRate": 10, "maxScaleDownRate": 10}}  # fmt: skip


def promql(query: str, target: float, lo: int = 1, hi: int = 4, **extra: Any) -> dict[str, Any]:
    return {"minReplicas": lo, "maxReplicas": hi,
            "metric": {"type": "promql", "query": query, "target": target}, **extra}  # fmt: skip


@pytest.fixture
def fast_policy(scaling_stack: Any, namespace: str) -> Any:
    name = f"fast-{namespace}"[:60]
    apply(scaling_stack, policy(name, **FAST))
    yield name
    scaling_stack.kubectl("delete", "scalingpolicy", name, "--ignore-not-found", check=False)


def md(cluster: Any, ns: str, name: str) -> Any:
    return kget(cluster, "md", name, ns)


def test_missing_policy_holds_then_a_new_policy_and_edits_apply(
    scaling_stack: Any, namespace: str
) -> None:
    c, ns = scaling_stack, namespace
    name = f"later-{ns}"[:60]
    apply(c, model("m", promql("vector(40)", 10, policyRef={"name": name})), ns)
    got = wait_for(lambda: (m := md(c, ns, "m")) and condition(m, "ScalingActive").get("reason")
                   == "PolicyNotFound" and m, 30, "ScalingActive=False PolicyNotFound")  # fmt: skip
    assert condition(got, "ScalingActive")["status"] == "False"
    assert name in condition(got, "ScalingActive")["message"]
    time.sleep(5)  # a few ticks: replicas held, one Event only
    assert replicas(md(c, ns, "m")) == 1
    assert len(events(c, ns, "m", "PolicyNotFound")) == 1

    try:
        # the policy appears: at the next tick the model scales to 40 / 10 = 4
        apply(c, policy(name, **{**FAST, "rates": {"maxScaleUpRate": 2}}))
        wait_for(lambda: replicas(md(c, ns, "m")) == 2, 15, "a x2 rate-limited step to 2")
        wait_for(lambda: replicas(md(c, ns, "m")) == 4, 15, "4 replicas")
        sp = wait_for(lambda: (p := kget(c, "scalingpolicy", name)) and
                      (p.get("status") or {}).get("models") == 1 and p, 15, "status.models 1")  # fmt: skip
        assert sp["status"]["models"] == 1
        got = md(c, ns, "m")
        auto = got["status"]["autoscaling"]
        assert auto["policy"] == name and auto["metric"] == "promql"
        # demand 40 over the ready replicas at the last published decision, against 10
        assert re.fullmatch(r"(10|13|20|40)/10 \(promql\)", auto["targets"]), auto["targets"]
        # an edit applies at the next tick: the sentence names the new stable window
        apply(c, policy(name, **{**FAST, "windows": {"stableSeconds": 9, "panicSeconds": 2}}))
        wait_for(lambda: "(stable window 9 s)" in md(c, ns, "m")["status"]["autoscaling"]
                 ["reason"], 25, "the edited stable window in status.autoscaling.reason")  # fmt: skip
        assert events(c, ns, "m", "ScaledUp")
    finally:
        c.kubectl("delete", "scalingpolicy", name, "--ignore-not-found", check=False)


BAD_QUERIES = {
    "parse": ("sum(rate(", "parse error"),
    "scalar": ("scalar(vector(1))", "not an instant vector"),
    "several": ('label_replace(vector(1), "x", "a", "", "") or '
                'label_replace(vector(2), "x", "b", "", "")', "returned 2 series"),
}  # fmt: skip


def test_bad_queries_are_quoted_and_do_not_affect_others(
    scaling_stack: Any, namespace: str, fast_policy: str
) -> None:
    c, ns = scaling_stack, namespace
    ref = {"policyRef": {"name": fast_policy}}
    for name, (query, _) in BAD_QUERIES.items():
        apply(c, model(name, promql(query, 1, **ref)), ns)
    apply(c, model("good", promql("vector(25)", 10, **ref)), ns)
    wait_for(lambda: replicas(md(c, ns, "good")) == 3, 30, "the good model at 3 replicas")
    for name, (_, words) in BAD_QUERIES.items():
        got = wait_for(lambda n=name: (m := md(c, ns, n)) and condition(m, "ScalingActive")
                       .get("reason") == "InvalidMetricQuery" and m, 20, f"{name}: InvalidMetricQuery")  # fmt: skip
        assert words in condition(got, "ScalingActive")["message"], condition(got, "ScalingActive")
        assert replicas(got) == 1
    assert condition(md(c, ns, "good"), "ScalingActive")["status"] == "True"


def test_prometheus_down_holds_replicas_and_resumes(
    scaling_stack: Any, namespace: str, fast_policy: str
) -> None:
    from berth_dev.addons import Addons

    c, ns = scaling_stack, namespace
    apply(c, model("m", promql("vector(30)", 10, policyRef={"name": fast_policy})), ns)
    wait_for(lambda: replicas(md(c, ns, "m")) == 3, 30, "3 replicas")
    c.stop_component("prometheus")
    try:
        got = wait_for(lambda: (m := md(c, ns, "m")) and condition(m, "ScalingActive")
                       .get("reason") == "MetricsUnavailable" and m, 20, "MetricsUnavailable")  # fmt: skip
        assert "Prometheus" in condition(got, "ScalingActive")["message"]
        time.sleep(8)  # longer than the stable window: still held, one Event
        got = md(c, ns, "m")
        assert replicas(got) == 3
        assert condition(got, "ScalingActive")["reason"] == "MetricsUnavailable"
        assert len(events(c, ns, "m", "MetricsUnavailable")) == 1
    finally:
        c.start_addons(Addons(node=False, prometheus=True, operator=False, examples=False))
    wait_for(lambda: condition(md(c, ns, "m"), "ScalingActive").get("status") == "True", 30,
             "ScalingActive=True again")  # fmt: skip
    # and it decides again: a new demand moves the replicas
    apply(c, model("m", promql("vector(10)", 10, policyRef={"name": fast_policy})), ns)
    wait_for(lambda: replicas(md(c, ns, "m")) == 1, 30, "back to 1 replica")


def test_new_pods_without_gpus_are_reported_limited(scaling_stack: Any, namespace: str) -> None:
    c, ns = scaling_stack, namespace
    name = f"slow-{ns}"[:60]
    # one A100 node with 8 GPUs: one replica of 8 GPUs fits, a second cannot
    apply(c, policy(name, windows={"stableSeconds": 6, "panicSeconds": 2},
                    rates={"maxScaleUpRate": 2}))  # fmt: skip
    try:
        gpu = {"gpu": {"count": 8, "product": "NVIDIA-A100-SXM4-40GB"}, "cpu": "1",
               "memory": "1Gi"}  # fmt: skip
        apply(c, model("big", promql("vector(80)", 10, hi=8, policyRef={"name": name}),
                       resources=gpu), ns)  # fmt: skip
        got = wait_for(lambda: (m := md(c, ns, "big")) and condition(m, "ScalingLimited")
                       .get("reason") == "InsufficientGPU" and m, 60, "ScalingLimited InsufficientGPU")  # fmt: skip
        limited = condition(got, "ScalingLimited")
        assert limited["status"] == "True" and "Insufficient nvidia.com/gpu" in limited["message"]
        held = replicas(got)
        assert held == 2  # 1 -> 2 (x2 rate); the second pod waits for a GPU: no further raise
        time.sleep(6)
        got = md(c, ns, "big")
        assert replicas(got) == held
        assert got["status"]["autoscaling"]["startingReplicas"] >= 1
    finally:
        c.kubectl("delete", "scalingpolicy", name, "--ignore-not-found", check=False)
