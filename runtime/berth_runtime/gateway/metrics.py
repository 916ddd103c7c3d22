"""The gateway's Prometheus metrics, per model (plain numbers, exposed at scrape time).

Every series carries `namespace`, `modeldeployment` (the ModelDeployment's name: the
autoscaler joins on it, as on the runtime's relabelled series) and `model` (the served
name). Scrape the gateway with `honor_labels: true` so its `namespace` label is kept.

- ``berth_gateway_requests_total{namespace,modeldeployment,model,code}``: requests answered.
- ``berth_gateway_requests_in_flight{...}``: requests forwarded and not yet answered.
- ``berth_gateway_requests_held{...}``: requests waiting for a ready endpoint.
- ``berth_gateway_cold_starts_total{...}``: wake-ups (scale from zero) the gateway began.
- ``berth_gateway_cold_start_seconds{...}``: how long held requests waited (histogram).
- ``berth_gateway_unrouted_requests_total{reason}``: requests that named no known model.
- ``berth_gateway_track_requests_total{...,track}``: requests of a model with a canary
  sent to its stable or canary track (the observed split).
- ``berth_gateway_overhead_seconds{...}``: the gateway's own time per forwarded request
  (histogram): from the request reaching the proxy to the response sent, minus the wait
  for the model (request written -> whole answer back). Answers of up to 64 KiB with a
  length only (streams have no single "answer back" moment); held requests not counted.

Everything is updated on the event loop, and the scrape runs there too: no locks.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from berth_runtime.metrics import Hist

COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7.5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 0.1)
ModelKey = tuple[str, str, str]  # (namespace, modeldeployment, served name)
LABELS = ["namespace", "modeldeployment", "model"]


class GatewayMetrics(Collector):
    def __init__(self) -> None:
        # (model key, status code) -> count; the labels are built at scrape time, not per
        # request (no tuple of strings, no str(code) on the hot path)
        self.requests: dict[tuple[ModelKey, int], int] = {}
        self.in_flight: dict[ModelKey, int] = {}
        self.held: dict[ModelKey, int] = {}
        self.cold_starts: dict[ModelKey, int] = {}
        self.cold_start_seconds: dict[ModelKey, Hist] = {}
        self.unrouted: dict[str, int] = {}
        self.tracks: dict[tuple[str, str, str, str], int] = {}
        self.overhead_seconds: dict[ModelKey, Hist] = {}

    def registry(self) -> CollectorRegistry:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(self)
        return reg

    def answered(self, key: ModelKey, code: int) -> None:
        k = (key, code)
        self.requests[k] = self.requests.get(k, 0) + 1

    def routed(self, key: ModelKey, track: str) -> None:
        k = (*key, track)
        self.tracks[k] = self.tracks.get(k, 0) + 1

    def add(self, table: dict[ModelKey, int], key: ModelKey, n: int) -> None:
        table[key] = table.get(key, 0) + n

    def cold_start(self, key: ModelKey) -> None:
        self.add(self.cold_starts, key, 1)

    def waited(self, key: ModelKey, seconds: float) -> None:
        hist = self.cold_start_seconds.get(key)
        if hist is None:
            hist = self.cold_start_seconds[key] = Hist(COLD_START_BUCKETS)
        hist.observe(seconds)

    def overhead(self, key: ModelKey, seconds: float) -> None:
        hist = self.overhead_seconds.get(key)
        if hist is None:
            hist = self.overhead_seconds[key] = Hist(OVERHEAD_BUCKETS)
        hist.observe(seconds)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        total = CounterMetricFamily(
            "berth_gateway_requests", "Requests answered by the gateway.", labels=[*LABELS, "code"]
        )
        for (key, code), n in self.requests.items():
            total.add_metric([*key, str(code)], n)
        yield total
        for name, table, doc in (
            (
                "berth_gateway_requests_in_flight",
                self.in_flight,
                "Requests forwarded, not yet answered.",
            ),
            ("berth_gateway_requests_held", self.held, "Requests waiting for a ready endpoint."),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=LABELS)
            for key, n in table.items():
                gauge.add_metric(list(key), n)
            yield gauge
        colds = CounterMetricFamily(
            "berth_gateway_cold_starts", "Scale-ups from zero the gateway began.", labels=LABELS
        )
        for key, n in self.cold_starts.items():
            colds.add_metric(list(key), n)
        yield colds
        for name, hists, doc in (
            (
                "berth_gateway_cold_start_seconds",
                self.cold_start_seconds,
                "Seconds held requests waited for a ready endpoint.",
            ),
            (
                "berth_gateway_overhead_seconds",
                self.overhead_seconds,
                "The gateway's own time per forwarded request, the wait for the model excluded.",
            ),
        ):
            hist = HistogramMetricFamily(name, doc, labels=LABELS)
            for key, h in hists.items():
                hist.add_metric(list(key), h.buckets(), h.total)
            yield hist
        unrouted = CounterMetricFamily(
            "berth_gateway_unrouted_requests",
            "Requests that named no model the gateway knows.",
            labels=["reason"],
        )
        for reason, n in self.unrouted.items():
            unrouted.add_metric([reason], n)
        yield unrouted
        tracks = CounterMetricFamily(
            "berth_gateway_track_requests",
            "Requests of a model with a canary, by the track they were sent to.",
            labels=[*LABELS, "track"],
        )
        for labels, n in self.tracks.items():
            tracks.add_metric(list(labels), n)
        yield tracks
