"""Every autoscaler metric type, and the gateway-demand query, against a real Prometheus.

Series are written through Prometheus' remote-write receiver with the names and labels
the runtime and the gateway export and the scrape configuration adds (`namespace`,
`modeldeployment`, `pod`); one autoscaler tick runs the product's query and parsing, and
each row asserts the value the autoscaler computes. A misspelled series or label, a
wrong aggregation or a filter that lets refused requests count fails its row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loop_host import Host, one_tick
from promstack import Prom, start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NS = "rows"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    yield from start(tmp_path_factory.mktemp("prom-rows"))


def pod(model: str, i: int = 0, **extra: str) -> dict[str, str]:
    """The labels of a runtime series of `model`'s pod i, as scraped."""
    return {"namespace": NS, "modeldeployment": model, "pod": f"{model}-{i}",
            "model": model, **extra}  # fmt: skip


def req(model: str, code: str, protocol: str = "v2") -> dict[str, str]:
    return pod(model, protocol=protocol, code=code)


def concurrency(p: Prom, m: str) -> None:
    p.gauge({"__name__": "berth_inflight_requests", **pod(m, 0)}, 3)
    p.gauge({"__name__": "berth_inflight_requests", **pod(m, 1)}, 4)


def rps(p: Prom, m: str) -> None:
    name = {"__name__": "berth_requests_total"}
    p.counter({**name, **req(m, "200")}, 5)
    p.counter({**name, **req(m, "503")}, 2)  # overloaded: real demand
    for refused, slope in (("401", 100), ("403", 40), ("404", 30), ("429", 50)):
        p.counter({**name, **req(m, refused)}, slope)
    p.counter({**name, **req(m, "200", protocol="health")}, 7)  # the kubelet's probes
    p.counter({**name, **req(m, "200", protocol="metrics")}, 0.5)  # Prometheus' scrapes
    p.counter({**name, **req(m, "200", protocol="other")}, 0.1)  # the operator's /startup


def idle(p: Prom, m: str) -> None:
    """A scraped pod that answered no inference request: probes, scrapes, refusals only."""
    p.gauge({"__name__": "berth_model_ready", **pod(m)}, 1)
    p.counter({"__name__": "berth_requests_total", **req(m, "200", protocol="metrics")}, 0.5)
    p.counter({"__name__": "berth_requests_total", **req(m, "401")}, 20)
    p.histogram("berth_request_duration_seconds", req(m, "401"),
                dict(zip(LE, (0, 0, 20, 20), strict=True)))  # fmt: skip


def queue_depth(p: Prom, m: str) -> None:
    p.gauge({"__name__": "berth_queue_depth", **pod(m)}, 6)


LE = ("0.001", "0.1", "0.25", "+Inf")


def latency(p: Prom, m: str) -> None:
    name = "berth_request_duration_seconds"
    # served requests: 10/s, all between 0.1 and 0.25 s -> p95 = 0.1 + 0.15 x 0.95
    p.histogram(name, req(m, "200"), dict(zip(LE, (0, 0, 10, 10), strict=True)))
    # a flood of fast 401s and 429s that would pull the p95 down to 1 ms if it counted
    p.histogram(name, req(m, "401"), dict(zip(LE, (1000,) * 4, strict=True)))
    p.histogram(name, req(m, "429"), dict(zip(LE, (500,) * 4, strict=True)))


def gpu(p: Prom, m: str) -> None:
    p.gauge({"__name__": "berth_gpu_utilization_ratio", **pod(m, 0), "gpu": "0"}, 0.6)
    p.gauge({"__name__": "berth_model_ready", **pod(m, 0)}, 1)
    # a pod still loading: its idle GPU is no spare capacity
    p.gauge({"__name__": "berth_gpu_utilization_ratio", **pod(m, 1), "gpu": "0"}, 0.0)
    p.gauge({"__name__": "berth_model_ready", **pod(m, 1)}, 0)


def waiting(p: Prom, m: str) -> None:
    p.gauge({"__name__": "berth_llm_requests_waiting", **pod(m, 0)}, 4)
    p.gauge({"__name__": "berth_llm_requests_waiting", **pod(m, 1)}, 5)


def running(p: Prom, m: str) -> None:
    p.gauge({"__name__": "berth_llm_requests_running", **pod(m)}, 12)


def ttft(p: Prom, m: str) -> None:
    bounds = ("0.5", "1.0", "+Inf")
    p.histogram("berth_llm_time_to_first_token_seconds", pod(m),
                dict(zip(bounds, (0, 4, 4), strict=True)))  # fmt: skip


def promql(p: Prom, m: str) -> None:
    p.gauge({"__name__": "app_queue_length", "namespace": NS, "queue": m}, 11)
    # the same series name in another namespace: scoped away
    p.gauge({"__name__": "app_queue_length", "namespace": "elsewhere", "queue": m}, 100)


Row = tuple[str, Callable[[Prom, str], None], float, str]
ROWS: dict[str, Row] = {
    # row: (metric type, writer, the value the autoscaler computes, spec query for promql)
    "concurrency": ("concurrency", concurrency, 7.0, ""),  # in-flight gauges summed over pods
    # 200 + 503 per second; refused requests, probes, scrapes and /startup are no demand
    "rps": ("rps", rps, 7.0, ""),
    # only probes, scrapes and refusals: 0 (idle, may go to zero), not "no data" (holds)
    "rps-idle": ("rps", idle, 0.0, ""),
    "queueDepth": ("queueDepth", queue_depth, 6.0, ""),  # the batcher's waiting requests
    "latencyP95": ("latencyP95", latency, 0.2425, ""),  # p95 of served requests only
    "latencyP95-idle": ("latencyP95", idle, 0.0, ""),  # no served request: 0, not no data
    "gpuUtilization": ("gpuUtilization", gpu, 0.6, ""),  # averaged over ready pods only
    "waitingRequests": ("waitingRequests", waiting, 9.0, ""),  # the LLM queue, summed
    "runningRequests": ("runningRequests", running, 12.0, ""),  # the LLM running batch
    "timeToFirstTokenP95": ("timeToFirstTokenP95", ttft, 0.975, ""),  # p95 TTFT histogram
    # the tenant's own query, scoped to the model's namespace
    "promql": ("promql", promql, 11.0, "sum(app_queue_length)"),
}


@pytest.mark.parametrize("row", list(ROWS))
async def test_each_metric_type_reads_its_series(prom: Prom, row: str) -> None:
    type_, writer, want, query = ROWS[row]
    model = row.lower()
    writer(prom, model)
    metric: dict[str, Any] = {"type": type_, "target": 1}
    if query:
        metric["query"] = query
    host = Host()
    key = host.add(NS, model, {"minReplicas": 1, "maxReplicas": 50, "metric": metric})
    await one_tick(host, prom.url)
    active = host.condition(key, "ScalingActive")
    assert active["status"] == "True", active
    assert host.status(key)["value"] == pytest.approx(want, abs=1e-3), host.status(key)


async def test_gateway_demand_wakes_a_model_at_zero(prom: Prom) -> None:
    """Requests held at the gateway keep a model off zero: held + in flight + answered/s."""
    m = "woken"
    labels = {"namespace": NS, "modeldeployment": m, "pod": "gw-0"}
    prom.gauge({"__name__": "berth_gateway_requests_held", **labels}, 2)
    prom.gauge({"__name__": "berth_gateway_requests_in_flight", **labels}, 1)
    prom.counter({"__name__": "berth_gateway_requests_total", **labels, "code": "200"}, 0.5)
    host = Host()
    metric = {"type": "concurrency", "target": 1}
    key = host.add(NS, m, {"minReplicas": 0, "maxReplicas": 4, "metric": metric},
                   replicas=0, ready=0)  # fmt: skip
    await one_tick(host, prom.url)
    status = host.status(key)
    assert status["desiredReplicas"] == 1, status
    assert "(3.5 held, in flight or per second)" in status["reason"], status["reason"]
    assert host.condition(key, "ScalingActive")["reason"] == "GatewayDemand"


async def test_without_gateway_series_a_model_at_zero_stays_there(prom: Prom) -> None:
    """The counterpart: no gateway demand, no runtime series, nothing wakes the model."""
    host = Host()
    metric = {"type": "concurrency", "target": 1}
    key = host.add(NS, "asleep", {"minReplicas": 0, "maxReplicas": 4, "metric": metric},
                   replicas=0, ready=0)  # fmt: skip
    await one_tick(host, prom.url)
    assert host.status(key)["desiredReplicas"] == 0
    assert host.condition(key, "ScalingActive")["reason"] == "ScaledToZero"
