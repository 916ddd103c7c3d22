"""waitingRequests: text generation requests waiting to join the running batch, summed per model.

Reads the runtime's ``berth_llm_requests_waiting`` (the continuous-batching scheduler's
queue; the Inference Extension reads the same gauge as ``vllm:num_requests_waiting``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector


class WaitingRequests:
    name = "waitingRequests"
    kind = "total"
    description = "waiting generation requests"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        return f"sum {by_clause(labels)} (berth_llm_requests_waiting{{{selector(labels)}}})"

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
