"""rps: inference requests per second (probes, scrapes and refused requests, 401/403/404/429,
excluded), summed per model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, scraped_zero, served


class Rps:
    name = "rps"
    kind = "total"
    description = "requests per second"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        return (
            f"sum {by_clause(labels)} (rate(berth_requests_total"
            f"{{{served(labels)}}}[{labels.rate_window}]))"
            f" or {scraped_zero(labels)}"
        )

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
