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
import yaml
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


def test_policy_hold_deadline_and_cap_applied_by_the_gateway(
    gateway_stack: Any, private_gateway: Any, namespace: str
) -> None:
    """A ScalingPolicy's scaleFromZero reaches the gateway through status.autoscaling.hold
    (the operator resolves it): its short deadline gives 503 + Retry-After, its cap 429;
    the model's own holdDeadlineSeconds then takes precedence."""
    c, ns = gateway_stack, namespace
    name = f"hold-{ns}"[:63]
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "serving.berth.dev/v1alpha1", "kind": "ScalingPolicy",
        "metadata": {"name": name, "labels": {"berth.dev/test": "true"}},
        "spec": {"scaleFromZero": {"holdDeadlineSeconds": 2, "maxHeldRequests": 1}},
    }))  # fmt: skip
    try:
        scaling = {"minReplicas": 0, "maxReplicas": 1, "policyRef": {"name": name}}
        apply(c, model("pol", replicas=0, model=FAKE, autoscaling=scaling), ns)

        def hold() -> Any:
            md = kget(c, "md", "pol", ns) or {}
            return ((md.get("status") or {}).get("autoscaling") or {}).get("hold")

        published = wait_for(hold, 60, "status.autoscaling.hold from the policy")
        assert published == {"deadlineSeconds": 2, "deadlineFrom": "policy", "maxRequests": 1}
        # the gateway's own default is 60 s and 1000 requests: only the policy says 2 s and 1
        gw = private_gateway(namespaces=ns, wake="false", retry_after_seconds=4)
        wait_for(lambda: "pol" in listed(gw, ns), 30, "the gateway listing the model")
        url = f"{gw}/ns/{ns}/v2/models/pol/infer"

        def infer() -> httpx.Response:
            return httpx.post(url, content=CNN_BODY, headers=JSON, timeout=30)

        labels = {"namespace": ns, "modeldeployment": "pol"}
        with ThreadPoolExecutor(2) as pool:
            t0 = time.monotonic()
            first = pool.submit(infer)
            wait_for(lambda: metric(gw, "berth_gateway_requests_held", **labels) == 1, 10,
                     "one request held")  # fmt: skip
            over = infer()  # the policy's cap of one
            assert over.status_code == 429 and over.headers["retry-after"] == "4", over.text
            assert "cap 1" in over.json()["error"]
            r = first.result()
            took = time.monotonic() - t0
        assert r.status_code == 503 and r.headers["retry-after"] == "4", r.text
        assert "is starting" in r.json()["error"] and "deadline of 2 s" in r.json()["error"]
        assert 1.5 <= took < 10, took

        # the model's own deadline wins over its policy's (the cap stays the policy's)
        c.kubectl("patch", "md", "pol", "-n", ns, "--type=merge",
                  "-p", '{"spec": {"autoscaling": {"holdDeadlineSeconds": 4}}}')  # fmt: skip
        wait_for(lambda: (hold() or {}).get("deadlineFrom") == "model", 60, "the model's own")
        t0 = time.monotonic()
        r = infer()
        took = time.monotonic() - t0
        assert r.status_code == 503 and "deadline of 4 s" in r.json()["error"], r.text
        assert 3.5 <= took < 12, took
    finally:
        c.kubectl("delete", "scalingpolicy", name, "--wait=false", check=False)
