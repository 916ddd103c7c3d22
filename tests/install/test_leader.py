"""Leader election's pure decision (berth_operator.leader.decide)."""

from __future__ import annotations

import pytest
from berth_operator.leader import LeaseView, decide, view_of

NOW = 1000.0


@pytest.mark.unit
@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (None, "create"),  # no Lease yet: the first replica creates it
        (LeaseView("me", NOW - 3, 15), "renew"),  # ours: keep renewing
        (LeaseView("other", NOW - 3, 15), "wait"),  # another holds a fresh Lease
        (LeaseView("other", NOW - 16, 15), "takeover"),  # the holder stopped renewing (killed)
        (LeaseView("", None, 15), "takeover"),  # released on a graceful stop
        (LeaseView("other", None, 15), "takeover"),  # held but never renewed: not valid
        (LeaseView("other", NOW - 15, 15), "wait"),  # exactly at expiry: not yet
    ],
)
def test_decide(view: LeaseView | None, expected: str) -> None:
    assert decide(view, "me", NOW) == expected


@pytest.mark.unit
def test_view_of_parses_micro_time() -> None:
    lease = {
        "spec": {
            "holderIdentity": "pod-a",
            "renewTime": "2026-11-29T05:00:00.123456Z",
            "leaseDurationSeconds": 20,
        }
    }
    view = view_of(lease, 15)
    assert view.holder == "pod-a" and view.duration_s == 20
    assert view.renew_time == pytest.approx(1795928400.123456)
