"""The gateway server's write coalescing (`server._HeadHold`): a response head and its
body leave in one write when they come in the same loop iteration, and a head alone is
never held past that iteration. The transport here records writes (a unit test of the
wrapper's ordering logic; the real server is exercised by test_proxy_local.py)."""

from __future__ import annotations

import asyncio

import pytest
from berth_runtime.gateway.server import _HeadHold

pytestmark = pytest.mark.unit

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_head_and_body_in_one_iteration_leave_in_one_write() -> None:
    t = Recorder()
    hold = _HeadHold(t, asyncio.get_running_loop())
    hold.write(HEAD)
    assert t.writes == []  # held for its body
    hold.write(b"ok")
    assert t.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)  # the end-of-iteration flush finds nothing left
    assert t.writes == [HEAD + b"ok"]
    hold.write(b"more")  # not a head: straight through
    assert t.writes == [HEAD + b"ok", b"more"]


async def test_a_head_alone_goes_out_at_the_end_of_the_iteration() -> None:
    t = Recorder()
    hold = _HeadHold(t, asyncio.get_running_loop())
    hold.write(HEAD)  # a streamed body not there yet, or a HEAD request
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert t.writes == [HEAD]
    hold.write(b"ok")
    assert t.writes == [HEAD, b"ok"]


async def test_close_flushes_a_held_head_and_the_rest_is_the_transport() -> None:
    t = Recorder()
    hold = _HeadHold(t, asyncio.get_running_loop())
    hold.write(HEAD)
    hold.close()
    assert t.writes == [HEAD] and t.closed
    assert hold.get_extra_info("peername") == "info:peername"
