"""runningRequests: text generation requests in the running batch, summed per model.

Reads the runtime's ``berth_llm_requests_running`` (``vllm:num_requests_running`` for the
Inference Extension). A target near ``--max-batch-size`` keeps each replica's batch full.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector


class RunningRequests:
    name = "runningRequests"
    kind = "total"
    description = "running generation requests"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        return f"sum {by_clause(labels)} (berth_llm_requests_running{{{selector(labels)}}})"

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
