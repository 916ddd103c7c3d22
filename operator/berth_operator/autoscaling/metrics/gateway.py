"""Demand the gateway sees (`berth-runtime gateway`), read for every autoscaled model.

Not a metric type a spec chooses: the loop reads it next to the model's own metric, in
one query for all models, so that

- a model at zero replicas with requests held at the gateway is scaled up (never left
  at, nor put back to, zero while requests wait), and
- "idle" means no request reached the gateway: held, in flight, or answered within the
  rate window.

The value is held + in-flight requests plus the answered rate (requests/s) per model; a
model without gateway series (no gateway installed) has no value, which changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, by_clause, by_model


def query(labels: Labels) -> str:
    # held and in-flight gauges, and the rate of answered requests: different label sets
    # (the counter has `code`), so `or` keeps every series and the sum adds them up
    return (
        f"sum {by_clause(labels)} ("
        '{__name__=~"berth_gateway_requests_held|berth_gateway_requests_in_flight"}'
        f" or rate(berth_gateway_requests_total[{labels.rate_window}]))"
    )


def values(
    result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
) -> dict[Key, float]:
    return {k: v for k, v in by_model(result, labels, keys).items() if isinstance(v, float)}
