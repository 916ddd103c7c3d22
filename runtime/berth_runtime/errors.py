"""One exception type per HTTP outcome, and the error body each protocol expects.

Code anywhere below the routes raises one of these; :func:`berth_runtime.app.create_app`
maps them to responses in exactly one place.
"""

from __future__ import annotations

import uuid


class BerthError(Exception):
    """Base class: an HTTP status, a message a user can act on, optional extra headers."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(BerthError):
    """The request is malformed: wrong field, shape, datatype or content (400)."""

    status = 400
    kind = "invalid_request_error"


class Unauthorized(BerthError):
    """A bearer token is required and was missing or wrong (401)."""

    status = 401
    kind = "authentication_error"

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ModelNotFound(BerthError):
    """No model is served under that name (404)."""

    status = 404
    kind = "not_found_error"


class PayloadTooLarge(BerthError):
    """The body exceeds the configured limit (413)."""

    status = 413
    kind = "invalid_request_error"


class RequestTimeout(BerthError):
    """The client did not send its whole body in time (408)."""

    status = 408
    kind = "timeout_error"


class UnsupportedMediaType(BerthError):
    """The body's Content-Type is neither JSON nor the binary tensor type (415)."""

    status = 415
    kind = "invalid_request_error"


class Busy(BerthError):
    """Too many requests are being handled at once; retry later (503 with Retry-After)."""

    status = 503
    kind = "unavailable_error"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Overloaded(BerthError):
    """The bounded queue or the in-flight byte budget is full; retry later (429)."""

    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(BerthError):
    """The model is not loaded and warmed yet, or the server is draining (503)."""

    status = 503
    kind = "unavailable_error"


class DeadlineExceeded(BerthError):
    """The request did not finish within its deadline (504)."""

    status = 504
    kind = "timeout_error"


class UpstreamFailed(BerthError):
    """The gateway's hop to the model's endpoint failed before an answer (502)."""

    status = 502
    kind = "unavailable_error"


class InternalError(BerthError):
    """Something failed on our side; the body carries an id to find the log line (500)."""

    status = 500
    kind = "internal_error"

    def __init__(self, message: str = "internal error", *, error_id: str | None = None) -> None:
        super().__init__(message)
        self.error_id = error_id or uuid.uuid4().hex[:16]


class ModelLoadError(Exception):
    """The model could not be fetched, verified, unpacked or loaded. Fatal at start-up."""


def error_body(protocol: str, err: BerthError) -> dict[str, object]:
    """The JSON error body in the shape each protocol's clients expect."""
    if protocol == "openai":
        inner: dict[str, object] = {
            "message": err.message,
            "type": err.kind,
            "param": None,
            "code": err.status,
        }
        if isinstance(err, InternalError):
            inner["id"] = err.error_id
        return {"error": inner}
    # OIP v2 and KServe v1 both use {"error": "<message>"}.
    body: dict[str, object] = {"error": err.message}
    if isinstance(err, InternalError):
        body["id"] = err.error_id
    return body


def protocol_of(path: str) -> str:
    """Which protocol a path belongs to: health, v2, v1 (KServe), openai, metrics or other.

    Probes get their own label so request rates (and autoscaling on them) count traffic,
    not the kubelet.
    """
    if path.startswith("/v2/health/"):
        return "health"
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1/models/"):
        return "v1"
    if path in ("/v1/embeddings", "/v1/models", "/v1/chat/completions", "/v1/completions"):
        return "openai"
    if path == "/metrics":
        return "metrics"
    return "other"
