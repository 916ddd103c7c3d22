"""The hold for a model at zero as the operator resolves it (pure): a ScalingPolicy's
scaleFromZero parsed, and the precedence model > policy > the gateway's default that
`status.autoscaling.hold` publishes for the gateway."""

from __future__ import annotations

from typing import Any

import pytest
from berth_operator.autoscaling import policy as pol

pytestmark = pytest.mark.unit

ANN = pol.HOLD_ANNOTATION


def sp(**wake: Any) -> pol.Policy:
    return pol.from_object({"metadata": {"name": "p"}, "spec": {"scaleFromZero": wake}})


def test_scale_from_zero_parsed() -> None:
    p = sp(holdDeadlineSeconds=20, maxHeldRequests=5, maxHeldBytes="16Mi")
    assert (p.hold_deadline_seconds, p.max_held_requests, p.max_held_bytes) == (20, 5, 16 << 20)
    assert sp(maxHeldBytes=4096).max_held_bytes == 4096
    assert sp(maxHeldBytes="1.5Ki").max_held_bytes == 1536
    empty = pol.from_object({"spec": {}})
    assert (empty.hold_deadline_seconds, empty.max_held_requests, empty.max_held_bytes) == (
        None, None, None)  # fmt: skip
    assert pol.Policy().hold_deadline_seconds is None  # built-in: the gateway's default


POLICY = sp(holdDeadlineSeconds=20, maxHeldRequests=5, maxHeldBytes="1Mi")
SPEC_OWN = {"autoscaling": {"maxReplicas": 1, "holdDeadlineSeconds": 7}}
SPEC = {"autoscaling": {"maxReplicas": 1}}


@pytest.mark.parametrize(
    ("spec", "annotations", "policy", "want"),
    [
        # the policy's deadline and caps
        (SPEC, {}, POLICY, {"deadlineSeconds": 20, "deadlineFrom": "policy",
                            "maxRequests": 5, "maxBytes": 1 << 20}),
        # the model's field wins over the policy; the caps stay the policy's
        (SPEC_OWN, {}, POLICY, {"deadlineSeconds": 7, "deadlineFrom": "model",
                                "maxRequests": 5, "maxBytes": 1 << 20}),
        # the annotation is the model's too
        (SPEC, {ANN: "3"}, POLICY, {"deadlineSeconds": 3, "deadlineFrom": "model",
                                    "maxRequests": 5, "maxBytes": 1 << 20}),
        (SPEC, {ANN: "0.5"}, None, {"deadlineSeconds": 0.5, "deadlineFrom": "model"}),
        # the field wins over the annotation
        (SPEC_OWN, {ANN: "3"}, None, {"deadlineSeconds": 7, "deadlineFrom": "model"}),
        # a bad annotation is ignored: the policy's applies
        (SPEC, {ANN: "soon"}, POLICY, {"deadlineSeconds": 20, "deadlineFrom": "policy",
                                       "maxRequests": 5, "maxBytes": 1 << 20}),
        (SPEC, {ANN: "-1"}, sp(holdDeadlineSeconds=9),
         {"deadlineSeconds": 9, "deadlineFrom": "policy"}),
        (SPEC, {ANN: "7200"}, None, {}),  # above 3600: ignored, as the gateway does
        # neither sets it: nothing published, the gateway's default applies
        (SPEC, {}, pol.Policy(), {}),
        (SPEC, {}, None, {}),  # PolicyNotFound
        (SPEC_OWN, {}, None, {"deadlineSeconds": 7, "deadlineFrom": "model"}),
    ],
)  # fmt: skip
def test_hold_precedence(
    spec: dict[str, Any], annotations: dict[str, str], policy: pol.Policy | None, want: Any
) -> None:
    assert pol.hold(spec, annotations, policy) == want
