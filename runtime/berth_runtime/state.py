"""The runtime's mutable state: the model once loaded, its batcher, readiness, draining."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from berth_runtime.batcher import Batcher
from berth_runtime.device import choose_device, configure_threads
from berth_runtime.errors import BadRequest, ModelNotFound, NotReady
from berth_runtime.llm.metrics import LlmMetrics
from berth_runtime.metrics import Metrics
from berth_runtime.models.base import ServedModel
from berth_runtime.settings import Settings
from berth_runtime.startup import StartupClock

log = logging.getLogger("berth.state")

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn`` on a daemon thread, so a SIGTERM during a long load need not wait for it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name="berth-load", daemon=True).start()
    return await fut


class RuntimeState:
    """Holds what the routes need; built once per app, never looked up per request."""

    def __init__(
        self,
        settings: Settings,
        *,
        loader: Callable[[Settings, torch.device], ServedModel] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.startup = StartupClock()
        self.metrics = Metrics(settings.name, self.startup)
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self.token = settings.resolved_token()
        # Every element takes at least one byte of body, so this bounds declared shapes.
        self.max_elements = settings.max_body_bytes
        self.max_rows = settings.max_rows
        self._loader = loader
        self._on_fatal = on_fatal
        self.llm_metrics: LlmMetrics | None = None
        if settings.format == "transformers":
            self.llm_metrics = LlmMetrics(settings.name, self._engine)
            self.metrics.registry.register(self.llm_metrics)
        self._load_task: asyncio.Task[None] | None = None

    def _engine(self) -> object | None:
        return getattr(self.model, "engine", None)

    def require(self, name: str) -> tuple[ServedModel, Batcher]:
        """The served model and its batcher, or 404 (other name) / 503 (not ready)."""
        if name != self.name:
            raise ModelNotFound(
                f"model {name!r} is not served here; this server serves {self.name!r}"
            )
        if not self.ready or self.model is None:
            if self.draining:
                raise NotReady(f"model {name!r} is shutting down")
            raise NotReady(f"model {name!r} is still loading")
        if self.batcher is None:  # a generative model has no tensor batcher
            raise BadRequest(
                f"model {name!r} generates text; use /v1/chat/completions or /v1/completions"
            )
        return self.model, self.batcher

    def require_generative(self, name: str) -> ServedModel:
        """The served text generation model, or 404 (other name or kind) / 503 (not ready)."""
        if name != self.name:
            raise ModelNotFound(
                f"model {name!r} is not served here; this server serves {self.name!r}"
            )
        if not self.ready or self.model is None:
            if self.draining:
                raise NotReady(f"model {name!r} is shutting down")
            raise NotReady(f"model {name!r} is still loading")
        if not self.model.generative:
            raise ModelNotFound(f"model {name!r} is not a text generation model")
        return self.model

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns false at once; accepted requests still finish."""
        if not self.draining:
            log.info("draining: readiness off, finishing accepted requests")
        self.draining = True
        self.ready = False
        self.metrics.model_metrics.ready.set(0)

    # --- start-up and shutdown ------------------------------------------------------

    def start_loading(self) -> None:
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="berth-load")

    async def _load(self) -> None:
        from berth_runtime.models import loader as formats

        s, clock = self.settings, self.startup
        clock.imported()
        started = time.perf_counter()
        try:
            if self._loader is None:
                with clock.phase("Fetching"):
                    path = await in_daemon_thread(formats.fetch_model, s)
            with clock.phase("Loading"):
                device = choose_device(s.device)
                configure_threads(s.threads, device)
                if self._loader is None:
                    model = await in_daemon_thread(formats.load_fetched, s, path, device)
                else:  # a test's loader: fetching and loading in one step (no Fetching phase)
                    model = await in_daemon_thread(self._loader, s, device)
            with clock.phase("WarmingUp"):
                await in_daemon_thread(model.warmup, s.max_batch_size)
        except Exception as exc:
            clock.failed = str(exc)[:500]
            log.error("model %r failed to load: %s", s.name, exc)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        seconds = time.perf_counter() - started
        self.model = model
        if model.generative:
            self._ready(model, seconds)
            return
        self.batcher = Batcher(
            model,
            self.metrics.model_metrics,
            max_batch_size=s.max_batch_size,
            max_delay_ms=s.max_delay_ms,
            max_queue=s.max_queue,
            timeout_ms=s.timeout_ms,
        )
        self.batcher.start()
        self._ready(model, seconds)

    def _ready(self, model: ServedModel, seconds: float) -> None:
        s = self.settings
        self.metrics.model_metrics.load_seconds.set(seconds)
        if not self.draining:
            self.startup.mark_ready()
            self.ready = True
            self.metrics.model_metrics.ready.set(1)
        log.info(
            "model %r ready in %.2f s (inputs %s, outputs %s)",
            s.name,
            seconds,
            [i.metadata() for i in model.inputs],
            [o.metadata() for o in model.outputs],
        )

    async def close(self) -> None:
        self.begin_drain()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.model is not None and self.model.generative:
            await in_daemon_thread(self.model.close)
