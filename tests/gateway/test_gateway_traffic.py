"""The gateway with real runtime pods on the real node and real load.

- A model at zero (autoscaled, minReplicas 0): 20 concurrent requests through the dev
  gateway all succeed once it is ready, each marked as a cold start; the gateway woke it
  (Event); status.startup shows every phase of that cold start (Scheduling, Pulling,
  Fetching, Loading, WarmingUp, Ready) and its total, also in the Cold start column; once
  idle the autoscaler takes it back to zero.
- Under steady load (25 requests/s through the gateway for the whole test): a scale from
  3 to 1 and a rollout of a model change finish with zero failed requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from gateway_helpers import (
    CNN_BODY,
    SteadyLoad,
    apply,
    cnn_claim,
    events,
    kget,
    model,
    pods,
    ready_pods,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def replicas(c: Any, ns: str, name: str) -> int:
    return int(((kget(c, "md", name, ns) or {}).get("spec") or {}).get("replicas", -1))


def timeline(pod: dict[str, Any]) -> str:
    """Seconds from the pod's creation to scheduled, container started and Ready."""
    import datetime as dt

    def t(x: str) -> float:
        return dt.datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp()

    st = pod["status"]
    born = t(pod["metadata"]["creationTimestamp"])
    conds = {c["type"]: t(c["lastTransitionTime"]) for c in st.get("conditions") or []}
    started = t(st["containerStatuses"][0]["state"]["running"]["startedAt"])
    return (f"scheduled +{conds.get('PodScheduled', born) - born:.0f} s, container started "
            f"+{started - born:.0f} s, Ready +{conds.get('Ready', born) - born:.0f} s")  # fmt: skip


def _t(x: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp()


def created(pod: dict[str, Any]) -> float:
    return _t(pod["metadata"]["creationTimestamp"])


def ready_at(pod: dict[str, Any]) -> float:
    return next(_t(c["lastTransitionTime"]) for c in pod["status"]["conditions"]
                if c["type"] == "Ready")  # fmt: skip


def test_scale_from_zero_holds_20_concurrent_requests(
    gateway_stack: Any, gateway_url: str, namespace: str
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume

    c, ns = gateway_stack, namespace
    pv = cnn_claim(c, ns)
    pname = f"gw-{ns}"[:60]
    apply(c, {"apiVersion": "serving.berth.dev/v1alpha1", "kind": "ScalingPolicy",
              "metadata": {"name": pname, "labels": {"berth.dev/test": "true"}},
              "spec": {"windows": {"stableSeconds": 6, "panicSeconds": 2},
                       "idleToZero": {"enabled": True, "afterSeconds": 10}}})  # fmt: skip
    try:
        apply(c, model("cnn", replicas=0, autoscaling={
            "minReplicas": 0, "maxReplicas": 2, "metric": {"type": "concurrency", "target": 8},
            "policyRef": {"name": pname}}), ns)  # fmt: skip
        url = f"{gateway_url}/ns/{ns}/v2/models/cnn/infer"
        wait_for(lambda: httpx.get(f"{gateway_url}/ns/{ns}/v1/models").json()["data"], 30,
                 "the gateway knowing the model")  # fmt: skip
        assert replicas(c, ns, "cnn") == 0

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(
                    client.post(url, content=CNN_BODY, headers={"content-type": "application/json"})
                    for _ in range(20)))  # fmt: skip

        t0, wall0 = time.monotonic(), time.time()
        answers = asyncio.run(burst())
        took = time.monotonic() - t0
        assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]
        waits = [float(r.headers["berth-cold-start"]) for r in answers]
        assert all(w > 0 for w in waits)
        assert json.loads(answers[0].text)["outputs"][0]["shape"] == [1, 10]
        woken = events(c, ns, "cnn", "WokenByGateway")
        assert (woken and "requests waiting" in woken[0]["message"]) or "request waiting" in (
            woken[0]["message"] if woken else ""
        )
        assert replicas(c, ns, "cnn") >= 1
        # how much of the cold start the gateway adds: first response minus the pod's load
        # the gateway may answer before Kubernetes marks the pod Ready (it probes starting
        # pods itself while it holds requests): wait for Kubernetes' view
        pod = wait_for(lambda: ready_pods(c, ns, "cnn"), 60, "the pod Ready")[0]
        text = httpx.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=5).text
        load = next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("berth_model_load_seconds"))  # fmt: skip
        print(
            f"\ncold start: 20 requests answered after {took:.1f} s (held up to "
            f"{max(waits):.1f} s); the model's own load {load:.1f} s; pod {timeline(pod)}; "
            f"first request -> pod created {created(pod) - wall0:.1f} s, pod Ready -> "
            f"answered {wall0 + took - ready_at(pod):.1f} s (1 s resolution)"
        )
        # status.startup: every phase of this cold start, from the wake-up to Ready
        name = pod["metadata"]["name"]

        def startup() -> dict[str, Any] | None:
            st = ((kget(c, "md", "cnn", ns) or {}).get("status") or {}).get("startup") or {}
            return st if st.get("pod") == name else None

        wait_for(lambda: startup() is not None, 30, "status.startup of the woken pod")
        st = startup()
        assert st is not None
        phases = {p["name"]: p["seconds"] for p in st["phases"]}
        print(f"status.startup: total {st['totalSeconds']} s, {phases}; {st.get('message')}")
        assert list(phases) == ["Scheduling", "Pulling", "Fetching", "Loading", "WarmingUp",
                                "Ready"], st  # fmt: skip
        assert all(v >= 0 for v in phases.values()), st
        assert st["trigger"] == "WokenFromZero", st
        # the phases lie within the total (the runtime's imports are in none of them)
        assert 0 < sum(phases.values()) <= st["totalSeconds"] + 0.05, st
        # up to Kubernetes' Ready, which may follow the answers (see above)
        assert st["totalSeconds"] <= took + 5, (st, took)
        # the printer column shows the total
        row = c.kubectl("get", "md", "cnn", "-n", ns).stdout
        assert "COLD START" in row.splitlines()[0], row
        # idle (no request reaches the gateway): the autoscaler takes it back to zero
        wait_for(lambda: replicas(c, ns, "cnn") == 0, 120, "back to zero once idle")
    finally:
        c.kubectl("delete", "md", "cnn", "-n", ns, "--wait=false", check=False)
        c.kubectl("delete", "scalingpolicy", pname, "--ignore-not-found", check=False)
        c.client().delete(PersistentVolume, pv)


def answered(gateway_url: str, ns: str, md: str) -> float:
    """The gateway's own count of 200 answers for one model (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "berth_gateway_requests_total"
        and s.labels.get("namespace") == ns
        and s.labels.get("modeldeployment") == md
        and s.labels.get("code") == "200"
    )


def test_scale_in_and_rollout_under_load_fail_nothing(
    gateway_stack: Any, gateway_url: str, namespace: str
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume

    c, ns = gateway_stack, namespace
    pv = cnn_claim(c, ns)
    try:
        apply(c, model("steady", replicas=3), ns)
        wait_for(lambda: len(ready_pods(c, ns, "steady")) == 3, 300, "3 ready replicas")
        url = f"{gateway_url}/ns/{ns}/v2/models/steady/infer"
        before = answered(gateway_url, ns, "steady")
        with SteadyLoad(url, CNN_BODY, rps=25) as load:
            # load flowing, by the gateway's own count, before anything changes
            wait_for(lambda: answered(gateway_url, ns, "steady") >= before + 50, 60,
                     "50 answers before the scale-in")  # fmt: skip
            # scale in 3 -> 1: the leaving pods get no new requests (terminating endpoints),
            # then drain
            c.kubectl("scale", "md", "steady", "-n", ns, "--replicas=1")
            wait_for(lambda: len(pods(c, ns, "steady")) == 1, 120, "two pods gone")
            # a model change rolls out with surge 1 / unavailable 0
            old = {p["metadata"]["name"] for p in pods(c, ns, "steady")}
            c.kubectl("patch", "md", "steady", "-n", ns, "--type=merge", "-p",
                      json.dumps({"spec": {"runtime": {"batching": {"maxDelayMs": 3}}}}))  # fmt: skip

            def rolled() -> bool:
                now = pods(c, ns, "steady")
                return (len(now) == 1 and not {p["metadata"]["name"] for p in now} & old
                        and len(ready_pods(c, ns, "steady")) == 1)  # fmt: skip

            wait_for(rolled, 240, "the rollout to one new ready pod")
            # and answers from the new pod alone, by the gateway's count
            done = answered(gateway_url, ns, "steady")
            wait_for(lambda: answered(gateway_url, ns, "steady") >= done + 50, 60,
                     "50 answers after the rollout")  # fmt: skip
        ok = sum(1 for _, code in load.results if code == "200")
        # the server's own counter saw every answer the client got: none lost or invented
        # (polled: it counts a request once the response has gone out)
        served = wait_for(lambda: (answered(gateway_url, ns, "steady") - before == ok
                                   and ok), 10, f"the gateway counting {ok} answers")  # fmt: skip
        print(
            f"\nsteady load: {len(load.results)} requests at {load.rate():.1f}/s (client), "
            f"{served} answered 200 by the gateway's count, failures {dict(load.failures())}"
        )
        assert not load.failures(), load.failures()
    finally:
        c.kubectl("delete", "md", "steady", "-n", ns, "--wait=false", check=False)
        c.client().delete(PersistentVolume, pv)
