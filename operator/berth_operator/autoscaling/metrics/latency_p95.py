"""latencyP95: the 95th percentile of request latency (seconds) over the rate window.

An average-kind metric: more replicas lower it, so the autoscaler wants
ready x p95 / target replicas. A model that answered no request in the window reads 0
(the second half of the query), not NaN: idle is data, not missing data. Health probes
and refused requests (401/403/404/429, answered at once) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, scraped_zero, served


class LatencyP95:
    name = "latencyP95"
    kind = "average"
    description = "s p95 latency"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        sel = served(labels)
        by = f"{labels.namespace}, {labels.model}"
        rate = f"[{labels.rate_window}]"
        return (
            f"(histogram_quantile(0.95, sum by ({by}, le) "
            f"(rate(berth_request_duration_seconds_bucket{{{sel}}}{rate}))) >= 0)"
            f" or (sum {by_clause(labels)} "
            f"(rate(berth_request_duration_seconds_count{{{sel}}}{rate})) == 0)"
            f" or {scraped_zero(labels)}"
        )

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
