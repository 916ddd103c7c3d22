"""concurrency: requests in flight (being served or waiting in the batcher), summed per model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector


class Concurrency:
    name = "concurrency"
    kind = "total"
    description = "in-flight requests"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        return f"sum {by_clause(labels)} (berth_inflight_requests{{{selector(labels)}}})"

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
