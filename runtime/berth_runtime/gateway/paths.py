"""Which model and protocol a request is for, from its path (pure).

[/ns/<namespace>]/v2/models/<name>[/...]        OIP v2       name in the path
[/ns/<namespace>]/v1/models/<name>[:predict]    KServe v1    name in the path
[/ns/<namespace>]/v1/embeddings | chat/completions | completions
                                                OpenAI       name in the body's "model"
[/ns/<namespace>]/v1/models                     OpenAI list  answered by the gateway
/v2/health/live, /v2/health/ready, /healthz, /metrics        the gateway's own
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

OPENAI_BODY_ROUTES = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
OWN_ROUTES = ("/v2/health/live", "/v2/health/ready", "/healthz", "/metrics")


@dataclass(frozen=True)
class Target:
    """kind: "model" (name known), "body" (OpenAI: name in the body), "list" (GET /v1/models),
    "own" (the gateway's health or metrics), "unknown"."""

    kind: str
    protocol: str  # "v2", "v1", "openai", "own", "other": the error body's shape
    namespace: str | None = None  # from /ns/<namespace>, else None
    model: str | None = None
    upstream_path: str = ""  # the path sent to the model (the /ns prefix removed)


def parse(path: str) -> Target:
    if path in OWN_ROUTES:
        return Target("own", "own", upstream_path=path)
    namespace = None
    if path.startswith("/ns/"):
        rest = path[4:]
        ns, sep, tail = rest.partition("/")
        if not ns or not sep:
            return Target("unknown", "other", upstream_path=path)
        namespace, path = unquote(ns), "/" + tail
    if path.startswith("/v2/models/"):
        name = path[len("/v2/models/") :].split("/", 1)[0]
        if name:
            return Target("model", "v2", namespace, unquote(name), path)
    elif path == "/v1/models" or path == "/v1/models/":
        return Target("list", "openai", namespace, None, path)
    elif path.startswith("/v1/models/"):
        name = path[len("/v1/models/") :].split("/", 1)[0].split(":", 1)[0]
        if name:
            return Target("model", "v1", namespace, unquote(name), path)
    elif path in OPENAI_BODY_ROUTES:
        return Target("body", "openai", namespace, None, path)
    protocol = "v2" if path.startswith("/v2") else "openai" if path.startswith("/v1") else "other"
    return Target("unknown", protocol, namespace, None, path)
