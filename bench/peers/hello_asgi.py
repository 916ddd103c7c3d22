"""The HTTP floor: a bare ASGI app that reads the request body and answers a tiny JSON.

Run it like Berth's runtime runs (uvicorn, uvloop, httptools, no access log):
    uvicorn hello_asgi:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    status = 500 if scope["path"].startswith("/fail") else 200
    await send({"type": "http.response.start", "status": status, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
