"""Reading request bodies under the size limit, and building protocol responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime.errors import BadRequest, PayloadTooLarge

JSON = "application/json"

MAX_DIGITS = 18
"""Digits a byte-count header may have: 18 fit in 64 bits and exceed every size limit.
More is refused before ``int()``, whose 4300-digit limit would raise ValueError (a 500)."""


def byte_count(raw: str | bytes, header: str) -> int:
    """A header holding a byte count (1 to 18 ASCII digits), or 400 naming the header."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if not (0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()):
        shown = repr(text) if len(text) <= 40 else f"{len(text)} characters"
        raise BadRequest(
            f"{header} must be a byte count of 1 to {MAX_DIGITS} ASCII digits, got {shown}"
        )
    return int(text)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it (or its declared length) passes ``limit``."""
    raw = request.headers.get("content-length")
    declared = None if raw is None else byte_count(raw, "Content-Length")
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object body or raise 400."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object")
    return doc


Reply = tuple[bytes, str, dict[str, str] | None]
"""What a protocol handler returns: body, media type, extra headers."""


def to_response(reply: Reply) -> Response:
    body, media, headers = reply
    return Response(body, media_type=media, headers=headers)


def json_response(doc: Any, status: int = 200, *, numpy: bool = False) -> Response:
    opts = orjson.OPT_SERIALIZE_NUMPY if numpy else 0
    return Response(orjson.dumps(doc, option=opts), status_code=status, media_type=JSON)
