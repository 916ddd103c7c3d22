"""gpuUtilization: the busy fraction (0-1) of the GPUs of ready pods, averaged per model.

An average-kind metric (ready x value / target replicas). Only pods whose model is loaded
(berth_model_ready == 1) count, so a loading pod's idle GPU does not read as spare capacity.
The runtime exports it only where NVML sees a GPU; elsewhere the model has no data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Value, by_clause, by_model, selector


class GpuUtilization:
    name = "gpuUtilization"
    kind = "average"
    description = "GPU utilisation"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        sel = selector(labels)
        return (
            f"avg {by_clause(labels)} (berth_gpu_utilization_ratio{{{sel}}} "
            f"and on ({labels.namespace}, pod) (berth_model_ready{{{sel}}} == 1))"
        )

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        return by_model(result, labels, keys)
