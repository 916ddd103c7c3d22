"""Prometheus metrics, one registry per app (nothing global, nothing at import time).

Names (all prefixed ``berth_``):

- ``berth_requests_total{model,protocol,code}``: requests answered.
- ``berth_request_duration_seconds{model,protocol,code}``: latency histogram (``code`` lets
  the autoscaler leave refused requests, 401/403/404/429, out of latencyP95).
- ``berth_queue_wait_seconds{model}``: time from queueing to dispatch.
- ``berth_batch_size{model}``: rows per forward pass (its ``_count`` is forward passes).
- ``berth_inflight_requests{model}``: inference requests being served now.
- ``berth_queue_depth{model}``: requests waiting for the device.
- ``berth_model_load_seconds{model}``: fetch + load + warm-up time.
- ``berth_model_ready{model}``: 1 when loaded and warmed, 0 otherwise.
- ``berth_runtime_startup_phase_seconds{model,phase}``: seconds of each finished start-up
  phase of this process (Fetching, Loading, WarmingUp; see startup.py); a phase not
  reached yet has no sample.
- ``berth_gpu_utilization_ratio{gpu}``, ``berth_gpu_memory_used_bytes{gpu}``,
  ``berth_gpu_memory_total_bytes{gpu}``: from NVML when a GPU and ``pynvml`` exist
  (memory falls back to torch's allocator view without NVML).

Every update happens on the event-loop thread (the device worker never touches metrics),
and so does the scrape, so the request-path metrics are plain Python numbers exposed by a
prometheus-client collector at scrape time: no lock per update, which matters at tens of
thousands of requests per second.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from berth_runtime.startup import StartupClock

log = logging.getLogger("berth.metrics")

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Hist:
    """A histogram cell: per-bucket counts (non-cumulative) plus sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


class Gauge:
    """A gauge cell."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class ModelMetrics:
    """The per-model cells the batcher and middleware update."""

    def __init__(self) -> None:
        self.queue_wait = Hist(WAIT_BUCKETS)
        self.batch_size = Hist(BATCH_BUCKETS)
        self.inflight = Gauge()
        self.queue_depth = Gauge()
        self.load_seconds = Gauge()
        self.ready = Gauge()


class Metrics(Collector):
    """All runtime metrics, exposed through a private prometheus-client registry."""

    def __init__(self, model: str, startup: StartupClock | None = None) -> None:
        self.model = model
        self.startup = startup
        self.model_metrics = ModelMetrics()
        self._requests: dict[tuple[str, str, int], list[int]] = {}
        self._durations: dict[tuple[str, str, int], Hist] = {}
        self._cells: dict[tuple[str, str, int], tuple[list[int], Hist]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.registry.register(GpuCollector())

    def observe(self, model: str, protocol: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (model, protocol, code)
        cells = self._cells.get(key)
        if cells is None:
            count = self._requests.setdefault(key, [0])
            hist = self._durations.setdefault(key, Hist(LATENCY_BUCKETS))
            cells = self._cells[key] = (count, hist)
        cells[0][0] += 1
        cells[1].observe(seconds)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "berth_requests",
            "Requests answered, by model, protocol and HTTP status code.",
            labels=["model", "protocol", "code"],
        )
        for (model, protocol, code), cell in list(self._requests.items()):
            requests.add_metric([model, protocol, str(code)], cell[0])
        yield requests
        duration = HistogramMetricFamily(
            "berth_request_duration_seconds",
            "Time from request arrival to response, seconds.",
            labels=["model", "protocol", "code"],
        )
        for (model, protocol, code), hist in list(self._durations.items()):
            duration.add_metric([model, protocol, str(code)], hist.buckets(), hist.total)
        yield duration
        m, name = self.model_metrics, [self.model]
        for metric, help_text, hist in (
            (
                "berth_queue_wait_seconds",
                "Time a request waited for the device, seconds.",
                m.queue_wait,
            ),
            ("berth_batch_size", "Rows per forward pass.", m.batch_size),
        ):
            family = HistogramMetricFamily(metric, help_text, labels=["model"])
            family.add_metric(name, hist.buckets(), hist.total)
            yield family
        for metric, help_text, gauge in (
            ("berth_inflight_requests", "Inference requests being served now.", m.inflight),
            ("berth_queue_depth", "Requests waiting for the device.", m.queue_depth),
            (
                "berth_model_load_seconds",
                "Seconds spent fetching, loading and warming the model.",
                m.load_seconds,
            ),
            ("berth_model_ready", "1 when the model is loaded and warmed up.", m.ready),
        ):
            gauge_family = GaugeMetricFamily(metric, help_text, labels=["model"])
            gauge_family.add_metric(name, gauge.value)
            yield gauge_family
        if self.startup is not None:
            phases = GaugeMetricFamily(
                "berth_runtime_startup_phase_seconds",
                "Seconds of each finished start-up phase of this process "
                "(Fetching, Loading, WarmingUp).",
                labels=["model", "phase"],
            )
            for phase, seconds in self.startup.durations().items():
                phases.add_metric([self.model, phase], seconds)
            yield phases


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
            "berth_gpu_utilization_ratio",
            "GPU busy fraction over the last sample period.",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "berth_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "berth_gpu_memory_total_bytes", "GPU memory size.", labels=["gpu"]
        )
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
