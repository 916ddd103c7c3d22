"""A small real HTTP server (uvicorn, raw ASGI) for the gateway's local tests.

Any path: JSON {method, path, query, authorization, body_bytes, port}.
A path ending in /sse: three server-sent events, 0.5 s apart.
A path ending in /slow: answers after 1 s.
A path ending in /echo: JSON {path, headers: [[name, value], ...], body}: what arrived.
A path ending in /big?n=N: N bytes (b"0123456789" repeated), with a content-length, in
  chunks of 16 KiB sent 10 ms apart.
Run: python upstream_app.py <port>
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    parts = []
    while True:
        msg = await receive()
        size += len(msg.get("body", b""))
        if scope["path"].endswith("/echo"):
            parts.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    if scope["path"].endswith("/echo"):
        echo = json.dumps({"path": scope["raw_path"].decode("latin-1"),
                           "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                                       for k, v in scope["headers"]],
                           "body": b"".join(parts).decode("latin-1")}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(echo)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": echo})
        return
    if scope["path"].endswith("/sse"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        n = int(dict(x.split("=") for x in scope["query_string"].decode().split("&") if x)
                .get("n", 3))  # fmt: skip
        for i in range(n):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(),
                        "more_body": True})  # fmt: skip
            await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"].endswith("/big"):
        n = int(scope["query_string"].decode().partition("n=")[2] or 0)
        data = (b"0123456789" * (n // 10 + 1))[:n]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(n).encode())]})  # fmt: skip
        for i in range(0, n, 16384):
            await send({"type": "http.response.body", "body": data[i : i + 16384],
                        "more_body": True})  # fmt: skip
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"].endswith("/slow"):
        await asyncio.sleep(1)
    headers = dict(scope["headers"])
    doc = {"method": scope["method"], "path": scope["path"],
           "query": scope["query_string"].decode(),
           "authorization": headers.get(b"authorization", b"").decode(), "body_bytes": size,
           "port": scope["server"][1]}  # fmt: skip
    data = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
