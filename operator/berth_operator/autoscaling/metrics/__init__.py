"""Metric types: one small module each, behind one interface (as KEDA has one file per scaler).

A metric type owns its PromQL (one query per tick for *all* models that use it, grouped by
namespace and model) and how the result vector becomes one value per (namespace, model).
A new type is one module plus one line in `TYPES`.

Two kinds of value:
  total    (concurrency, rps, queueDepth, promql, waitingRequests, runningRequests) the
           model's demand summed over its replicas; the autoscaler wants total / target
           replicas.
  average  (latencyP95, gpuUtilization, timeToFirstTokenP95) a value per ready replica;
           the autoscaler wants
           ready x value / target replicas (HPA's ratio).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Key = tuple[str, str]  # (namespace, ModelDeployment name)


@dataclass(frozen=True)
class Labels:
    """The label names the scrape configuration gives every runtime series."""

    # The pod's namespace (Prometheus' kubernetes_sd and the PodMonitor both add it).
    namespace: str = "namespace"
    # The ModelDeployment name, from the pod label serving.berth.dev/model (relabelled).
    model: str = "modeldeployment"
    # Range of rate() for counters and histograms (at least 2 scrape intervals).
    rate_window: str = "10s"


@dataclass(frozen=True)
class Problem:
    """Why a model has no value this tick: `reason` is a condition reason."""

    reason: str
    message: str


Value = float | Problem


class MetricType(Protocol):
    name: str  # the spec's autoscaling.metric.type
    kind: str  # "total" or "average"
    description: str  # unit and meaning, for docs

    def query(self, labels: Labels, user_query: str | None) -> str:
        """The one PromQL query for every model of this type (user_query: promql only)."""
        ...

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        """An instant vector -> a value (or a Problem) for each model in `keys` that has one.

        A model absent from the answer has no data this tick (never zero)."""
        ...


def sample_value(series: Mapping[str, Any]) -> float | None:
    """The float of one vector element; None for NaN, infinities or garbage."""
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def by_model(
    result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
) -> dict[Key, Value]:
    """Group a vector by (namespace, model) labels; several series for one model is a Problem."""
    wanted = set(keys)
    found: dict[Key, list[float | None]] = {}
    for series in result:
        metric = series.get("metric") or {}
        key = (str(metric.get(labels.namespace, "")), str(metric.get(labels.model, "")))
        if key in wanted:
            found.setdefault(key, []).append(sample_value(series))
    out: dict[Key, Value] = {}
    for key, values in found.items():
        if len(values) > 1:
            out[key] = Problem(
                "InvalidMetricQuery",
                f"the query returned {len(values)} series for this model; it needs one",
            )
        elif values[0] is not None:
            out[key] = values[0]
        # NaN / Inf: no data this tick, as if absent
    return out


# Refused requests (unauthenticated, forbidden, unknown model, rate limited) are no demand:
# a client hammering a model with a bad token must not scale it up.
REFUSED_CODES = "401|403|404|429"


def selector(labels: Labels) -> str:
    """Series of Berth runtime pods that carry the model label."""
    return f'{labels.model}!=""'


def served(labels: Labels) -> str:
    """Request series (those with `protocol` and `code`) that are demand: the inference
    protocols only (not the kubelet's probes, Prometheus' scrapes of /metrics nor the
    operator's /startup read), and no refused requests."""
    return f'{selector(labels)},protocol=~"v2|v1|openai",code!~"{REFUSED_CODES}"'


def scraped_zero(labels: Labels) -> str:
    """0 for every model whose runtime pods Prometheus scrapes: `or` this onto a request
    query so that a model that answered no inference request (only probes, scrapes or
    refused requests, whose series are filtered out) reads 0, idle, not "no data"."""
    return f"(sum {by_clause(labels)} (berth_model_ready{{{selector(labels)}}}) * 0)"


def by_clause(labels: Labels) -> str:
    return f"by ({labels.namespace}, {labels.model})"


def registry() -> dict[str, MetricType]:
    from . import (
        concurrency,
        gpu_utilization,
        latency_p95,
        promql,
        queue_depth,
        rps,
        running_requests,
        ttft_p95,
        waiting_requests,
    )

    types: list[MetricType] = [
        concurrency.Concurrency(),
        rps.Rps(),
        queue_depth.QueueDepth(),
        latency_p95.LatencyP95(),
        gpu_utilization.GpuUtilization(),
        promql.PromQL(),
        waiting_requests.WaitingRequests(),
        running_requests.RunningRequests(),
        ttft_p95.TimeToFirstTokenP95(),
    ]
    return {t.name: t for t in types}


TYPES: dict[str, MetricType] = registry()
