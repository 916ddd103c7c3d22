"""Prometheus metrics, one registry per app (nothing global, nothing at import time).

Names (all prefixed ``berth_``):

- ``berth_requests_total{model,protocol,code}``: requests answered.
- ``berth_request_duration_seconds{model,protocol}``: latency histogram.
- ``berth_queue_wait_seconds{model}``: time from queueing to dispatch.
- ``berth_batch_size{model}``: rows per forward pass (its ``_count`` is forward passes).
- ``berth_inflight_requests{model}``: inference requests being served now.
- ``berth_queue_depth{model}``: requests waiting for the device.
- ``berth_model_load_seconds{model}``: fetch + load + warm-up time.
- ``berth_model_ready{model}``: 1 when loaded and warmed, 0 otherwise.
- ``berth_gpu_utilization_ratio{gpu}``, ``berth_gpu_memory_used_bytes{gpu}``,
  ``berth_gpu_memory_total_bytes{gpu}``: from NVML when a GPU and ``pynvml`` exist
  (memory falls back to torch's allocator view without NVML).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("berth.metrics")

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class ModelMetrics:
    """Children already bound to the model label, so hot paths skip label lookups."""

    queue_wait: Any
    batch_size: Any
    inflight: Any
    queue_depth: Any
    load_seconds: Any
    ready: Any


class Metrics:
    """All runtime metrics in one private registry."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.model = model
        self.requests = Counter(
            "berth_requests", "Requests answered, by model, protocol and HTTP status code.",
            ["model", "protocol", "code"], registry=r,
        )
        self.duration = Histogram(
            "berth_request_duration_seconds", "Time from request arrival to response, seconds.",
            ["model", "protocol"], buckets=LATENCY_BUCKETS, registry=r,
        )
        queue_wait = Histogram(
            "berth_queue_wait_seconds", "Time a request waited for the device, seconds.",
            ["model"], buckets=WAIT_BUCKETS, registry=r,
        )
        batch_size = Histogram(
            "berth_batch_size", "Rows per forward pass.", ["model"], buckets=BATCH_BUCKETS,
            registry=r,
        )
        inflight = Gauge(
            "berth_inflight_requests", "Inference requests being served now.", ["model"],
            registry=r,
        )
        depth = Gauge(
            "berth_queue_depth", "Requests waiting for the device.", ["model"], registry=r
        )
        load = Gauge(
            "berth_model_load_seconds", "Seconds spent fetching, loading and warming the model.",
            ["model"], registry=r,
        )
        ready = Gauge(
            "berth_model_ready", "1 when the model is loaded and warmed up.", ["model"],
            registry=r,
        )
        self.model_metrics = ModelMetrics(
            queue_wait=queue_wait.labels(model),
            batch_size=batch_size.labels(model),
            inflight=inflight.labels(model),
            queue_depth=depth.labels(model),
            load_seconds=load.labels(model),
            ready=ready.labels(model),
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        r.register(GpuCollector())

    def observe(self, model: str, protocol: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency (children cached per label set)."""
        key = (model, protocol, code)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.requests.labels(model, protocol, str(code)),
                self.duration.labels(model, protocol),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)


class GpuCollector(Collector):
    """GPU utilisation and memory, read at scrape time. Silent when there is no GPU."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._checked = False

    def _init_nvml(self) -> Any:
        if not self._checked:
            self._checked = True
            try:
                import pynvml  # type: ignore[import-not-found, unused-ignore]

                pynvml.nvmlInit()
                self._nvml = pynvml
            except Exception:  # no library or no driver: fall back to torch below
                self._nvml = None
        return self._nvml

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        import torch

        if not torch.cuda.is_available():
            return []
        util = GaugeMetricFamily(
            "berth_gpu_utilization_ratio", "GPU busy fraction over the last sample period.",
            labels=["gpu"],
        )
        used = GaugeMetricFamily("berth_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("berth_gpu_memory_total_bytes", "GPU memory size.", labels=["gpu"])
        nvml = self._init_nvml()
        for i in range(torch.cuda.device_count()):
            if nvml is not None:
                try:
                    h = nvml.nvmlDeviceGetHandleByIndex(i)
                    util.add_metric([str(i)], nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
                    mem = nvml.nvmlDeviceGetMemoryInfo(h)
                    used.add_metric([str(i)], float(mem.used))
                    total.add_metric([str(i)], float(mem.total))
                    continue
                except Exception as exc:
                    log.debug("NVML read failed: %s", exc)
            free_b, total_b = torch.cuda.mem_get_info(i)
            used.add_metric([str(i)], float(total_b - free_b))
            total.add_metric([str(i)], float(total_b))
        return [util, used, total]
