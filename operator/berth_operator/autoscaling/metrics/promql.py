"""promql: the user's own query; its value is the model's total demand (as KEDA's threshold).

Each distinct query runs once per tick, whichever models share it. The answer must be an
instant vector. A series carrying the namespace and model labels belongs to that model;
a series with neither label applies to every model that uses the query. More than one
series for a model is an error the model's status quotes (aggregate with sum by (...)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import Key, Labels, Problem, Value, sample_value


class PromQL:
    name = "promql"
    kind = "total"
    description = "query value"

    def query(self, labels: Labels, user_query: str | None = None) -> str:
        if not user_query:
            raise ValueError("autoscaling.metric.query is required for type promql")
        return user_query

    def values(
        self, result: Sequence[Mapping[str, Any]], labels: Labels, keys: Iterable[Key]
    ) -> dict[Key, Value]:
        out: dict[Key, Value] = {}
        for key in keys:
            mine = [s for s in result if _belongs((s.get("metric") or {}), key, labels)]
            if len(mine) > 1:
                out[key] = Problem(
                    "InvalidMetricQuery",
                    f"the query returned {len(mine)} series for this model; it needs one: "
                    f"aggregate, e.g. sum by ({labels.namespace}, {labels.model}) (...)",
                )
            elif mine:
                value = sample_value(mine[0])
                if value is not None:
                    out[key] = value
        return out


def _belongs(metric: Mapping[str, Any], key: Key, labels: Labels) -> bool:
    ns, model = metric.get(labels.namespace), metric.get(labels.model)
    return (ns is None or ns == key[0]) and (model is None or model == key[1])
