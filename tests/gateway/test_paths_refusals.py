"""paths.parse on raw (percent-encoded) paths: one parse gives the route and the upstream
path, and a path whose meaning could differ between the gateway and the model's server
is refused ("bad", 400 with the reason) (pure)."""

from __future__ import annotations

import pytest
from berth_runtime.gateway import paths

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # routed to the model by the decoded path while the pod got /metrics (main)
        ("/ns/default%2Fv2%2Fmodels%2Fminilm/metrics", "%2F"),
        # a 500 on main: the raw path had no /ns/<namespace>/ to cut
        ("/ns%2Fdefault%2Fv2%2Fmodels%2Fminilm/metrics", "%2F"),
        ("/v2/models/m%2f..%2fx/infer", "%2F"),  # lower-case hex too
        ("/v2/models/m/%2e%2e/metrics", "%2E"),  # encoded dot-segments
        ("/v2/models/m%2Ex/infer", "%2E"),  # any encoded dot: a server may normalize
        ("/v2/models/m%5C..%5Cmetrics", "%5C"),  # encoded backslash
        ("/v2/models/m\\..\\metrics", "'\\'"),  # a literal one (a separator on some servers)
        ("/v2/models/m/../../metrics", "'..'"),  # dot-segments anywhere in the path
        ("/ns/../v2/models/m/infer", "'..'"),  # in the namespace too
        ("/v2/models/m/./infer", "'.'"),
        ("/v1/models/..", "'..'"),
        ("*", "must start with '/'"),  # asterisk-form: nothing to route
    ],
)
def test_bad_paths_are_refused_with_the_reason(raw: str, reason: str) -> None:
    t = paths.parse(raw)
    assert t.kind == "bad" and reason in t.error, t


@pytest.mark.parametrize(
    ("raw", "kind", "namespace", "model", "upstream"),
    [
        # plain percent-encoding decodes for the route; the model gets the raw path as sent
        ("/ns/%64efault/v2/models/%6D/infer", "model", "default", "m", "/v2/models/%6D/infer"),
        ("/v2/models/m/a%20b", "model", None, "m", "/v2/models/m/a%20b"),
        # dots inside a segment are not dot-segments
        ("/v2/models/m.v1/infer", "model", None, "m.v1", "/v2/models/m.v1/infer"),
        ("/v2/models/m/..x/infer", "model", None, "m", "/v2/models/m/..x/infer"),
        # an empty namespace prefix stays no route (checked before the refusals)
        ("/ns//v2/models/x", "unknown", None, None, "/ns//v2/models/x"),
    ],
)  # fmt: skip
def test_good_paths_route_and_forward_the_same_text(
    raw: str, kind: str, namespace: str | None, model: str | None, upstream: str
) -> None:
    t = paths.parse(raw)
    assert (t.kind, t.namespace, t.model, t.upstream_path) == (kind, namespace, model, upstream)


def test_a_refusal_keeps_the_protocol_shape() -> None:
    # the 400 is written in the protocol the path names (OpenAI's error object for /v1)
    assert paths.parse("/ns/a/v1/chat/%2e%2e").protocol == "openai"
    assert paths.parse("/v2/models/%2e%2e/infer").protocol == "v2"
