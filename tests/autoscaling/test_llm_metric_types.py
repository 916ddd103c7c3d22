"""The LLM metric types: their PromQL names the runtime's series, and they are in the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from berth_operator.autoscaling.metrics import TYPES, Labels

pytestmark = pytest.mark.unit

L = Labels()
REPO = Path(__file__).resolve().parents[2]

CASES = [
    # why, type, kind, expected query
    ("the scheduler's queue, summed over replicas",
     "waitingRequests", "total",
     'sum by (namespace, modeldeployment) (berth_llm_requests_waiting{modeldeployment!=""})'),
    ("the running batch, summed over replicas",
     "runningRequests", "total",
     'sum by (namespace, modeldeployment) (berth_llm_requests_running{modeldeployment!=""})'),
    ("p95 of the TTFT histogram per model; an idle model reads 0, not missing",
     "timeToFirstTokenP95", "average",
     "(histogram_quantile(0.95, sum by (namespace, modeldeployment, le) "
     '(rate(berth_llm_time_to_first_token_seconds_bucket{modeldeployment!=""}[10s]))) >= 0)'
     " or (sum by (namespace, modeldeployment) "
     '(rate(berth_llm_time_to_first_token_seconds_count{modeldeployment!=""}[10s])) == 0)'),
]  # fmt: skip


@pytest.mark.parametrize(("why", "name", "kind", "query"), CASES, ids=[c[1] for c in CASES])
def test_llm_metric_types(why: str, name: str, kind: str, query: str) -> None:
    t = TYPES[name]
    assert (t.kind, t.query(L, None)) == (kind, query)
    vector: list[dict[str, Any]] = [
        {"metric": {"namespace": "ns", "modeldeployment": "chat"}, "value": [0, "2.5"]}
    ]
    assert t.values(vector, L, [("ns", "chat"), ("ns", "other")]) == {("ns", "chat"): 2.5}


def test_the_crd_enum_lists_every_metric_type() -> None:
    crd = yaml.safe_load((REPO / "crds/modeldeployments.serving.berth.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    metric = spec["properties"]["autoscaling"]["properties"]["metric"]["properties"]["type"]
    assert sorted(metric["enum"]) == sorted(TYPES)
    formats = spec["properties"]["model"]["properties"]["format"]["enum"]
    assert "transformers" in formats
