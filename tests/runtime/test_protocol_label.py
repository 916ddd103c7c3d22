"""Which protocol label a request path gets in berth_requests_total."""

from __future__ import annotations

import pytest
from berth_runtime.errors import protocol_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/v2/health/ready", "health"),  # kubelet probes must not count as traffic
        ("/v2/health/live", "health"),
        ("/v2/models/m/infer", "v2"),  # inference
        ("/v2", "v2"),  # server metadata
        ("/v1/models/m:predict", "v1"),  # KServe v1
        ("/v1/embeddings", "openai"),
        ("/metrics", "metrics"),  # Prometheus scrapes
        ("/nope", "other"),
    ],
)
def test_protocol_of(path: str, protocol: str) -> None:
    assert protocol_of(path) == protocol
