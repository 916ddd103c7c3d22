"""A raw-socket HTTP/1.1 server that misbehaves as a hostile model pod might, for the
gateway's hostile tests (uvicorn cannot send these). Keep-alive; each request's body is
read by its content-length. By the path's last segment:

  hints    103 Early Hints (with a Link), then 200 echoing the body
  twohints 100 Continue and 103 Early Hints, then 200 echoing the body
  stray    200 echoing the body, and in the same write a second, unasked response
  upgrade  101 Switching Protocols (nobody asked)
  hugehead a 200 whose head never ends (a header line of 8 MiB)
  connhdr  200 with `Connection: x-internal` and an `X-Internal` field (hop-by-hop)
  flood    200 with a body of 256 MiB, written as fast as the gateway reads it
anything else: 200 echoing the body.
Run: python raw_upstream.py <port>
"""

from __future__ import annotations

import asyncio
import sys


def answer(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n".encode() + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1].split("?")[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            kind = path.rstrip("/").rsplit("/", 1)[-1]
            if kind == "hints":
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(answer("200 OK", body))
            elif kind == "twohints":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                             b"link: </a.js>\r\n\r\n" + answer("200 OK", body))  # fmt: skip
            elif kind == "stray":
                writer.write(answer("200 OK", body) + answer("200 OK", b"NOT YOURS"))
            elif kind == "upgrade":
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: evil\r\n"
                             b"connection: upgrade\r\n\r\n")  # fmt: skip
                await writer.drain()
                await asyncio.sleep(1)
                break
            elif kind == "hugehead":
                writer.write(b"HTTP/1.1 200 OK\r\nx-huge: ")
                for _ in range(128):
                    writer.write(b"a" * 65536)
                    await writer.drain()
                break
            elif kind == "flood":
                block = b"z" * (1024 * 1024)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: " + str(256 * len(block)).encode()
                             + b"\r\n\r\n")  # fmt: skip
                for _ in range(256):
                    writer.write(block)
                    await writer.drain()
            elif kind == "connhdr":
                writer.write(answer("200 OK", body, b"connection: x-internal\r\n"
                                    b"x-internal: secret\r\nx-public: yes\r\n"))  # fmt: skip
            else:
                writer.write(answer("200 OK", body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
