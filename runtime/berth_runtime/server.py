"""Run the app under uvicorn (uvloop + httptools) with a graceful SIGTERM drain.

On SIGTERM readiness turns false at once; uvicorn stops accepting connections, lets every
accepted request finish (bounded by ``grace_seconds``), then the lifespan stops the
batcher and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import uvicorn

from berth_runtime import headtimeout
from berth_runtime.app import create_app
from berth_runtime.settings import Settings
from berth_runtime.state import RuntimeState

log = logging.getLogger("berth.server")


SWITCH_INTERVAL_S = 0.0005  # GIL hand-off bound between the loop and the device thread


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that flips readiness before draining and exits 0 after it."""

    def __init__(self, config: uvicorn.Config, state: RuntimeState) -> None:
        super().__init__(config)
        self.berth_state = state
        self.failed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.berth_state.begin_drain()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    def fail(self, exc: BaseException) -> None:
        """The model could not be loaded: stop serving and exit non-zero."""
        self.failed = True
        self.should_exit = True


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    holder: list[DrainingServer] = []

    def on_fatal(exc: BaseException) -> None:
        if holder:
            holder[0].fail(exc)

    # The event loop and the device worker hand work to each other a few times per batch;
    # CPython's default 5 ms GIL switch interval would add up to that to every hand-off.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    state = RuntimeState(settings, on_fatal=on_fatal)
    app = create_app(settings, state=state)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools with a deadline on each request's head (slow-header senders get 408).
        http=headtimeout.protocol(settings.header_timeout_s),
        lifespan="on",
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.grace_seconds) or None,
        backlog=4096,
        # A hard cap on open connections (idle keep-alive ones included); above it uvicorn
        # answers a plain 503. The middleware's --max-concurrent cap answers first, in JSON.
        limit_concurrency=settings.max_connections,
        server_header=False,
    )
    server = DrainingServer(config, state)
    holder.append(server)
    server.run()
    return 1 if server.failed else 0
