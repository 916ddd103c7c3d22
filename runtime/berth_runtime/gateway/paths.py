"""Which model and protocol a request is for, from its raw path (pure).

[/ns/<namespace>]/v2/models/<name>[/...]        OIP v2       name in the path
[/ns/<namespace>]/v1/models/<name>[:predict]    KServe v1    name in the path
[/ns/<namespace>]/v1/embeddings | chat/completions | completions
                                                OpenAI       name in the body's "model"
[/ns/<namespace>]/v1/models                     OpenAI list  answered by the gateway
/v2/health/live, /v2/health/ready, /healthz, /metrics        the gateway's own

One parse of the path as the client sent it (percent-encoded, `raw_path`) decides both
the route and the path sent to the model: the upstream path is the same raw text with the
/ns/<namespace> prefix cut, so what routed the request is what the model receives. A path
whose meaning could differ between the gateway and the model's server is refused ("bad",
400): an encoded `/`, `\\` or `.` (%2F, %5C, %2E), a literal `\\`, or a dot-segment
(`.` or `..`) anywhere in the path. Percent-encoded names (`%64efault`) decode after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

OPENAI_BODY_ROUTES = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
OWN_ROUTES = ("/v2/health/live", "/v2/health/ready", "/healthz", "/metrics")
# encodings of a path separator or a dot: a server behind the gateway may decode them
# before it routes (and then see another path than the gateway did)
_ENCODED = (("%2f", "an encoded '/' (%2F)"), ("%5c", "an encoded '\\' (%5C)"),
            ("%2e", "an encoded '.' (%2E)"))  # fmt: skip


@dataclass(frozen=True)
class Target:
    """kind: "model" (name known), "body" (OpenAI: name in the body), "list" (GET /v1/models),
    "own" (the gateway's health or metrics), "unknown", "bad" (refused: `error` says why)."""

    kind: str
    protocol: str  # "v2", "v1", "openai", "own", "other": the error body's shape
    namespace: str | None = None  # from /ns/<namespace>, else None
    model: str | None = None
    upstream_path: str = ""  # the raw path sent to the model (the /ns prefix removed)
    error: str = ""  # kind "bad": what is wrong with the path


def _protocol(path: str) -> str:
    return "v2" if path.startswith("/v2") else "openai" if path.startswith("/v1") else "other"


def problem(raw: str) -> str:
    """Why the gateway refuses this raw path ("" when it does not)."""
    if not raw.startswith("/"):
        return "the path must start with '/'"
    if "%" in raw:
        low = raw.lower()
        for enc, what in _ENCODED:
            if enc in low:
                return f"the path contains {what}, which the gateway does not route"
    if "\\" in raw:
        return "the path contains a '\\', which the gateway does not route"
    if "/." in raw:
        for seg in raw.split("/"):
            if seg in (".", ".."):
                return f"the path contains the dot-segment {seg!r}, which is not routed"
    return ""


def parse(raw: str) -> Target:
    """`raw`: the request's path exactly as sent (percent-encoded, no query)."""
    if raw in OWN_ROUTES:
        return Target("own", "own", upstream_path=raw)
    path, ns = raw, ""
    if raw.startswith("/ns/"):
        ns, sep, tail = raw[4:].partition("/")
        if not ns or not sep:
            return Target("unknown", "other", upstream_path=raw)
        path = "/" + tail
    why = problem(raw)
    if why:
        return Target("bad", _protocol(path), error=why)
    namespace = unquote(ns) if ns else None
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
    return Target("unknown", _protocol(path), namespace, None, path)
