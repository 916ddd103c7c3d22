"""queueDepth: requests waiting for the device (not yet in a batch), summed per model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector


class QueueDepth:
    name = "queueDepth"
    kind = "total"
    description = "queued requests"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        return f"sum {by_clause(labels)} (berth_queue_depth{{{selector(labels)}}})"

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
