"""The gateway against the real control plane, with models held at zero (no pods run):
hold caps (429) and deadlines (503), both with Retry-After; a client that leaves while
held; a model deleted while held; unknown models and bad bodies in each protocol's shape;
and the operator's status.url through the gateway."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from berth_runtime.gateway.routing import HOLD_ANNOTATION
from gateway_helpers import CNN_BODY, apply, kget, metric, model, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAKE = {"uri": "file:///models/m.pt", "format": "torchscript"}  # never loaded: no pod runs
JSON = {"content-type": "application/json"}


def listed(base: str, ns: str) -> set[str]:
    data = httpx.get(f"{base}/ns/{ns}/v1/models", timeout=5).json()["data"]
    return {m["id"] for m in data}


def test_hold_limits_errors_and_cleanup(
    gateway_stack: Any, gateway_url: str, private_gateway: Any, namespace: str
) -> None:
    c, ns = gateway_stack, namespace
    apply(c, model("cold", {HOLD_ANNOTATION: "3"}, replicas=0, model=FAKE), ns)
    apply(c, model("doomed", {HOLD_ANNOTATION: "60"}, replicas=0, model=FAKE), ns)
    # wake off: the models stay at zero, so every request here is held
    gw = private_gateway(namespaces=ns, wake="false", hold_max_requests=2, retry_after_seconds=7)
    wait_for(lambda: listed(gw, ns) >= {"cold", "doomed"}, 30, "the gateway listing both models")
    base = f"{gw}/ns/{ns}"

    # unknown models: 404 in each protocol's own shape
    r = httpx.post(f"{base}/v2/models/nope/infer", content=CNN_BODY, headers=JSON)
    assert r.status_code == 404 and "nope" in r.json()["error"], r.text
    r = httpx.post(f"{base}/v1/models/nope:predict", json={"instances": [[1.0]]})
    assert r.status_code == 404 and isinstance(r.json()["error"], str), r.text
    r = httpx.post(f"{base}/v1/embeddings", json={"model": "nope", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", r.text
    # unprefixed paths resolve in the default namespace only: another tenant's name is not found
    r = httpx.post(f"{gw}/v2/models/cold/infer", content=CNN_BODY, headers=JSON)
    assert r.status_code == 404 and "/ns/<namespace>" in r.json()["error"], r.text
    # bad bodies on the OpenAI routes: 400 with the reason
    r = httpx.post(f"{base}/v1/embeddings", content=b"{bad", headers=JSON)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{base}/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "model" in r.json()["error"]["message"], r.text

    # the cap: two held, the third refused at once with 429 + Retry-After
    def infer(timeout: float = 30) -> httpx.Response:
        return httpx.post(f"{base}/v2/models/cold/infer", content=CNN_BODY, headers=JSON,
                          timeout=timeout)  # fmt: skip

    labels = {"namespace": ns, "modeldeployment": "cold"}
    with ThreadPoolExecutor(4) as pool:
        t0 = time.monotonic()
        held = [pool.submit(infer) for _ in range(2)]
        wait_for(lambda: metric(gw, "berth_gateway_requests_held", **labels) == 2, 10,
                 "two requests held")  # fmt: skip
        over = infer()
        assert over.status_code == 429, over.text
        assert over.headers["retry-after"] == "7"
        assert "hold is full" in over.json()["error"]
        # the deadline (annotation: 3 s): 503 + Retry-After + how long it has been starting
        for f in held:
            r = f.result()
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "7"
            assert "is starting" in r.json()["error"] and "3 s" in r.json()["error"]
        assert 2.5 <= time.monotonic() - t0 < 15
    assert metric(gw, "berth_gateway_requests_held", **labels) == 0
    assert kget(c, "md", "cold", ns)["spec"]["replicas"] == 0  # wake is off: nothing patched

    # a client that leaves while held frees its slot
    dl = {"namespace": ns, "modeldeployment": "doomed"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v2/models/doomed/infer", content=CNN_BODY, headers=JSON, timeout=1.5)
    wait_for(lambda: metric(gw, "berth_gateway_requests_held", **dl) == 0, 10,
             "the held slot freed after the disconnect")  # fmt: skip

    # a model deleted while requests wait: a clear 404 at once, not a hang
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: httpx.post(f"{base}/v2/models/doomed/infer",
                                                 content=CNN_BODY, headers=JSON, timeout=60))  # fmt: skip
        wait_for(lambda: metric(gw, "berth_gateway_requests_held", **dl) == 1, 10, "one held")
        t0 = time.monotonic()
        c.kubectl("delete", "md", "doomed", "-n", ns, "--wait=false")
        r = waiting.result()
        assert r.status_code == 404, r.text
        assert "deleted while the request waited" in r.json()["error"]
        assert time.monotonic() - t0 < 20

    # the operator was given the dev gateway's address: status.url and the zero message
    def status() -> Any:
        return (kget(c, "md", "cold", ns) or {}).get("status") or {}

    st = wait_for(lambda: status() if status().get("url") else None, 60, "status.url")
    assert st["url"] == f"{gateway_url}/ns/{ns}"
    ready = next(x for x in st["conditions"] if x["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ScaledToZero")
    assert "gateway" in ready["message"] and "scales the model up" in ready["message"]
