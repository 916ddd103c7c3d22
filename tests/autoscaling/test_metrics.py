"""Metric types, pure: their PromQL and how a result vector becomes per-model values."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator.autoscaling import policy
from berth_operator.autoscaling.metrics import TYPES, Labels, Problem

pytestmark = pytest.mark.unit

L = Labels()
A, B, C = ("ns1", "a"), ("ns1", "b"), ("ns2", "a")


def series(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, value]}


def test_every_type_groups_by_namespace_and_model() -> None:
    for name, kind in TYPES.items():
        if name == "promql":
            continue
        q = kind.query(L, None)
        assert "by (namespace, modeldeployment" in q, (name, q)


VECTOR_CASES = [
    # why, result, expected
    ("one series per model -> its value; models of the same name in two namespaces differ",
     [series("3", namespace="ns1", modeldeployment="a"),
      series("5", namespace="ns2", modeldeployment="a")],
     {A: 3.0, C: 5.0}),
    ("a model without a series is absent (missing data), never 0",
     [series("3", namespace="ns1", modeldeployment="a")], {A: 3.0}),
    ("NaN is absent too (missing, not zero)",
     [series("NaN", namespace="ns1", modeldeployment="a")], {}),
    ("garbage values are absent",
     [{"metric": {"namespace": "ns1", "modeldeployment": "a"}, "value": ["x"]}], {}),
    ("series of models nobody asked about are ignored",
     [series("3", namespace="other", modeldeployment="z")], {}),
    ("two series for one model is an error the model's status quotes",
     [series("1", namespace="ns1", modeldeployment="a", pod="p1"),
      series("2", namespace="ns1", modeldeployment="a", pod="p2")],
     {A: Problem("InvalidMetricQuery", "the query returned 2 series for this model; it needs one")}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "result", "expected"), VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES]
)
def test_concurrency_values(
    why: str, result: list[dict[str, Any]], expected: dict[Any, Any]
) -> None:
    assert TYPES["concurrency"].values(result, L, [A, B, C]) == expected


def test_promql_series_without_model_labels_apply_to_every_user() -> None:
    kind = TYPES["promql"]
    assert kind.query(L, "sum(queue_length)") == "sum(queue_length)"
    assert kind.values([series("7")], L, [A, C]) == {A: 7.0, C: 7.0}


def test_promql_several_series_for_a_model_are_counted_not_quoted() -> None:
    got = TYPES["promql"].values([series("1", job="x"), series("2", job="secret")], L, [A])
    problem = got[A]
    assert isinstance(problem, Problem) and problem.reason == "InvalidMetricQuery"
    assert "returned 2 series" in problem.message
    # the status never echoes series labels (they may be another tenant's)
    assert "job" not in problem.message and "secret" not in problem.message


def test_promql_labelled_series_belong_to_their_model() -> None:
    result = [series("1", namespace="ns1", modeldeployment="a"),
              series("2", namespace="ns1", modeldeployment="b")]  # fmt: skip
    assert TYPES["promql"].values(result, L, [A, B]) == {A: 1.0, B: 2.0}


def test_policy_from_object_and_resolution() -> None:
    obj = {"metadata": {"name": "fast"},
           "spec": {"windows": {"stableSeconds": 20, "panicSeconds": 4}, "panicThreshold": 3,
                    "rates": {"maxScaleUpRate": 4, "maxScaleDownRate": 3,
                              "scaleDownDelaySeconds": 10},
                    "idleToZero": {"enabled": False, "afterSeconds": 60},
                    "fallback": {"replicas": 2}}}  # fmt: skip
    p = policy.from_object(obj)
    assert (p.name, p.stable_seconds, p.panic_seconds, p.panic_threshold) == ("fast", 20, 4, 3)
    assert (p.max_scale_up_rate, p.max_scale_down_rate, p.scale_down_delay_seconds) == (4, 3, 10)
    assert (p.idle_to_zero, p.idle_after_seconds, p.tolerance) == (False, 60, 0.1)
    assert (p.fallback_replicas, p.fallback_after_ticks) == (2, 3)
    # an old object (the original four fields only) still reads
    assert policy.from_object({"metadata": {"name": "old"}, "spec": {}}).tolerance == 0.1
    known = {"fast": p}
    assert policy.resolve("fast", known) is p
    assert policy.resolve("default", known) == policy.Policy()  # built-in defaults
    assert policy.resolve("missing", known) is None  # PolicyNotFound
    assert policy.policy_name({"autoscaling": {"maxReplicas": 2}}) == "default"


def test_gateway_demand_query_and_values() -> None:
    from berth_operator.autoscaling.metrics import gateway

    q = gateway.query(Labels())
    # held + in flight + answered rate, summed per model (checked against a real
    # Prometheus by tests/gateway through the autoscaler)
    assert q.startswith("sum by (namespace, modeldeployment) (")
    assert "berth_gateway_requests_held|berth_gateway_requests_in_flight" in q
    assert "rate(berth_gateway_requests_total[10s])" in q
    result = [
        {"metric": {"namespace": "a", "modeldeployment": "m"}, "value": [0, "2"]},
        {"metric": {"namespace": "a", "modeldeployment": "idle"}, "value": [0, "0"]},
        {"metric": {"namespace": "b", "modeldeployment": "m"}, "value": [0, "NaN"]},  # no data
    ]
    keys = [("a", "m"), ("a", "idle"), ("b", "m"), ("c", "absent")]
    assert gateway.values(result, Labels(), keys) == {("a", "m"): 2.0, ("a", "idle"): 0.0}
