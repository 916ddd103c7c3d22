"""The hold limits the gateway applies to one model (pure): the model's own deadline,
else its ScalingPolicy's as the operator published it in status.autoscaling.hold, else
the gateway's setting; the policy's caps only ever lower the gateway's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from berth_runtime.gateway import holding, routing
from berth_runtime.gateway.routing import HOLD_ANNOTATION, ModelInfo

pytestmark = pytest.mark.unit

PUBLISHED = {"deadlineSeconds": 20, "deadlineFrom": "policy", "maxRequests": 5, "maxBytes": 1024}


def md(own: Any = None, ann: str | None = None, hold: Any = None) -> dict[str, Any]:
    scaling: dict[str, Any] = {"minReplicas": 0, "maxReplicas": 2}
    if own is not None:
        scaling["holdDeadlineSeconds"] = own
    body: dict[str, Any] = {
        "metadata": {"namespace": "a", "name": "m"},
        "spec": {"replicas": 0, "autoscaling": scaling},
    }
    if ann is not None:
        body["metadata"]["annotations"] = {HOLD_ANNOTATION: ann}
    if hold is not None:
        body["status"] = {"autoscaling": {"policy": "p", "hold": hold}}
    return body


@pytest.mark.parametrize(
    ("body", "want"),
    [
        (md(), (None, None, None)),  # nothing set: the gateway's settings
        (md(hold=PUBLISHED), (20.0, 5, 1024)),  # the policy, as published
        (md(own=7, hold=PUBLISHED), (7.0, 5, 1024)),  # the model's field wins
        (md(ann="3", hold=PUBLISHED), (3.0, 5, 1024)),  # so does its annotation
        (md(own=7, ann="3"), (7.0, None, None)),  # the field before the annotation
        (md(ann="soon", hold=PUBLISHED), (20.0, 5, 1024)),  # bad annotation: next level
        (md(ann="-1"), (None, None, None)),
        (md(ann="7200"), (None, None, None)),  # above 3600 s
        (md(hold={"deadlineSeconds": 0, "maxRequests": -1, "maxBytes": "x"}),
         (None, None, None)),  # nonsense in status: the gateway's settings
        (md(hold="broken"), (None, None, None)),
    ],
)  # fmt: skip
def test_model_info_hold_precedence(body: dict[str, Any], want: tuple[Any, ...]) -> None:
    info = routing.model_info(body)
    assert (info.hold_seconds, info.hold_max_requests, info.hold_max_bytes) == want


def test_caps_only_lower_the_gateway() -> None:
    base = ModelInfo("a", "m", "m", 0)
    assert holding.caps(base, 100, 1000) == (100, 1000)
    lower = ModelInfo("a", "m", "m", 0, hold_max_requests=5, hold_max_bytes=10)
    assert holding.caps(lower, 100, 1000) == (5, 10)
    higher = ModelInfo("a", "m", "m", 0, hold_max_requests=500, hold_max_bytes=10**9)
    assert holding.caps(higher, 100, 1000) == (100, 1000)


def test_holds_apply_the_policy_cap_from_the_table() -> None:
    async def run() -> None:
        capped = ModelInfo("a", "m", "m", 0, hold_max_requests=1)
        free = ModelInfo("a", "n", "n", 0)
        holds = holding.Holds(max_requests=3, max_bytes=1 << 20)
        holds.update(routing.build_table([capped, free], []))
        holds.admit(("a", "m"), 10)
        with pytest.raises(holding.Overflow, match="cap 1"):
            holds.admit(("a", "m"), 10)
        for _ in range(3):
            holds.admit(("a", "n"), 10)
        with pytest.raises(holding.Overflow, match="cap 3"):
            holds.admit(("a", "n"), 10)

    asyncio.run(run())
