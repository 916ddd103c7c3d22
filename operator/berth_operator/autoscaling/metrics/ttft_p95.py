"""timeToFirstTokenP95: the 95th percentile time to first token (seconds) over the rate window.

An average-kind metric like latencyP95: more replicas shorten queues and so the time to
first token; the autoscaler wants ready x p95 / target replicas. A model that started no
generation in the window reads 0 (the second half of the query): idle is data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector

SERIES = "berth_llm_time_to_first_token_seconds"


class TimeToFirstTokenP95:
    name = "timeToFirstTokenP95"
    kind = "average"
    description = "s p95 time to first token"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        sel = selector(labels)
        by = f"{labels.namespace}, {labels.model}"
        rate = f"[{labels.rate_window}]"
        return (
            f"(histogram_quantile(0.95, sum by ({by}, le) "
            f"(rate({SERIES}_bucket{{{sel}}}{rate}))) >= 0)"
            f" or (sum {by_clause(labels)} (rate({SERIES}_count{{{sel}}}{rate})) == 0)"
        )

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
