"""The request fields the gateway sends a model (proxy._request_headers, pure): hop-by-hop
fields and those a Connection header names are dropped, Expect is the gateway's, and
X-Forwarded-For/-Proto are the gateway's own unless a front proxy is trusted (then the
peer is appended). And the one budget's arithmetic (budget.Budget)."""

from __future__ import annotations

from typing import Any

import pytest
from berth_runtime.errors import Busy
from berth_runtime.gateway import proxy
from berth_runtime.gateway.budget import Budget

pytestmark = pytest.mark.unit


def scope(*headers: tuple[str, str], scheme: str = "http") -> dict[str, Any]:
    return {"headers": [(k.encode(), v.encode()) for k, v in headers],
            "client": ("10.0.0.7", 5555), "scheme": scheme}  # fmt: skip


def sent(s: dict[str, Any], trust: bool = False, whole: bool = False) -> list[tuple[str, str]]:
    drop = proxy.REQUEST_DROP_WHOLE if whole else proxy.REQUEST_DROP
    return [(k.decode(), v.decode()) for k, v in proxy._request_headers(s, drop, trust)]


@pytest.mark.parametrize(
    ("headers", "trust", "want"),
    [
        # the client's copies are dropped: it cannot choose the source a model logs or trusts
        ((("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6"),
          ("x-forwarded-host", "evil"), ("x-forwarded-proto", "https"), ("a", "1")), False,
         [("a", "1"), ("x-forwarded-for", "10.0.0.7"), ("x-forwarded-proto", "http")]),
        # a trusted front proxy's values are kept, the peer appended (every hop listed)
        ((("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"),
          ("x-forwarded-proto", "https"), ("forwarded", "for=1.1.1.1")), True,
         [("x-forwarded-proto", "https"), ("forwarded", "for=1.1.1.1"),
          ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.7")]),
        # trusted, but nothing forwarded: the gateway's own values
        ((), True, [("x-forwarded-for", "10.0.0.7"), ("x-forwarded-proto", "http")]),
        # Connection names fields (any case, any spacing, several Connection headers)
        ((("connection", "keep-alive, X-Secret"), ("connection", " x-other "),
          ("x-secret", "1"), ("x-other", "2"), ("keep-alive", "timeout=5"), ("b", "2")), False,
         [("b", "2"), ("x-forwarded-for", "10.0.0.7"), ("x-forwarded-proto", "http")]),
        # the fixed hop-by-hop set and Expect (the gateway answers 100-continue itself)
        ((("te", "trailers"), ("upgrade", "h2c"), ("proxy-connection", "keep-alive"),
          ("expect", "100-continue"), ("host", "gw"), ("transfer-encoding", "chunked")), False,
         [("x-forwarded-for", "10.0.0.7"), ("x-forwarded-proto", "http")]),
    ],
)  # fmt: skip
def test_request_fields(headers: tuple[tuple[str, str], ...], trust: bool,
                        want: list[tuple[str, str]]) -> None:  # fmt: skip
    assert sent(scope(*headers), trust) == want


def test_a_whole_body_gets_its_own_length_and_https_is_reported() -> None:
    got = sent(scope(("content-length", "9"), scheme="https"), whole=True)
    assert got == [("x-forwarded-for", "10.0.0.7"), ("x-forwarded-proto", "https")]


def test_the_budget_refuses_what_would_exceed_it_and_takes_nothing() -> None:
    b = Budget(max_requests=2, max_bytes=100, retry_after_s=3)
    b.enter()
    b.enter()
    with pytest.raises(Busy) as exc:
        b.enter()
    assert exc.value.status == 503 and exc.value.headers == {"Retry-After": "3"}
    b.leave()
    b.enter()  # room again
    b.take(60)
    with pytest.raises(Busy, match="limit 100"):
        b.take(41)
    assert b.bytes == 60  # a refused take takes nothing
    b.take(40)
    b.give(100)
    assert (b.requests, b.bytes) == (2, 0)
