"""Dynamic batching: an asyncio-side gatherer feeding one device-owning worker thread.

Requests are queued on the event loop. A batch is dispatched when the worker has room and
either ``max_batch_size`` rows are waiting, or no new request arrived during the last loop
turn, or the oldest request has waited ``max_delay_ms``. So an idle server adds no delay,
and a busy one gathers everything that arrived while the device was working, which is
what fills batches under load. Only requests whose inputs agree on datatype and every
dimension but the first share a batch.

Two batches may be in flight (one running, one queued behind it) so the worker never waits
for the event loop between batches. The worker thread concatenates, runs ``model.predict`` and hands the outputs back with
one ``loop.call_soon_threadsafe`` per batch; each request's future gets row slices (views,
no copies). If a batch of several requests fails, each request is retried alone so one bad
request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from berth_runtime.errors import DeadlineExceeded, InternalError, NotReady, Overloaded
from berth_runtime.metrics import ModelMetrics
from berth_runtime.models.base import ServedModel

log = logging.getLogger("berth.batcher")

Outputs = list[np.ndarray]
ARRIVAL: contextvars.ContextVar[float | None] = contextvars.ContextVar("arrival", default=None)
"""perf_counter() when the request arrived (set by the middleware): deadlines count from it."""
PIPELINE = 2  # batches handed to the worker at once: one running, one ready behind it


@dataclass(slots=True)
class Work:
    """One queued request."""

    inputs: list[np.ndarray]
    rows: int
    key: Hashable
    future: asyncio.Future[Outputs]
    enqueued: float = field(default_factory=time.perf_counter)


def _expire(fut: asyncio.Future[Outputs], timeout_s: float) -> None:
    if not fut.done():
        fut.set_exception(
            DeadlineExceeded(f"request did not finish within {timeout_s * 1000:.0f} ms")
        )


class Batcher:
    """Owns the request queue, the batching task and the worker thread for one model."""

    def __init__(
        self,
        model: ServedModel,
        metrics: ModelMetrics,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        timeout_ms: float,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_rows = model.fixed_batch or max_batch_size
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.timeout_s = timeout_ms / 1000.0
        self.pending: deque[Work] = deque()
        self._rows = 0  # rows in self.pending (expired ones included until popped)
        self._jobs: queue.SimpleQueue[list[Work] | None] = queue.SimpleQueue()
        self._arrived = asyncio.Event()
        # Up to PIPELINE batches are handed to the worker at once, so that when one batch
        # finishes the next is already waiting on the worker's queue: the device never
        # idles for an event-loop round trip (which a busy loop or the GIL can stretch).
        self._slots = asyncio.Semaphore(PIPELINE)
        self._inflight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the gatherer task and the worker thread (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="berth-device", daemon=True)
        self._thread.start()
        self._task = self._loop.create_task(self._gather(), name="berth-batcher")

    async def stop(self) -> None:
        """Stop after everything queued has been answered."""
        self._closed = True
        while self.pending or self._inflight:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self._jobs.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)

    # --- event-loop side -------------------------------------------------------------

    async def submit(self, inputs: list[np.ndarray], rows: int, key: Hashable) -> Outputs:
        """Queue one request and wait for its outputs (row slices of the batch outputs)."""
        if self._closed:
            raise NotReady("server is shutting down")
        if len(self.pending) >= self.max_queue:
            raise Overloaded(f"queue is full ({self.max_queue} requests waiting); retry later")
        loop = self._loop
        assert loop is not None
        now = time.perf_counter()
        arrival = ARRIVAL.get()
        remaining = self.timeout_s - (now - arrival if arrival is not None else 0.0)
        if remaining <= 0:
            raise DeadlineExceeded(
                f"request did not finish within {self.timeout_s * 1000:.0f} ms of its arrival"
            )
        fut: asyncio.Future[Outputs] = loop.create_future()
        self.pending.append(Work(inputs, rows, key, fut, now))
        self._rows += rows
        self.metrics.queue_depth.inc()
        self._arrived.set()
        timer = loop.call_later(remaining, _expire, fut, self.timeout_s)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _gather(self) -> None:
        while True:
            if not self.pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            # Let requests that are already on their way join, bounded by max_delay.
            if self.max_delay_s > 0:
                deadline = self.pending[0].enqueued + self.max_delay_s if self.pending else 0.0
                while self.pending and self._rows < self.max_rows:
                    self._arrived.clear()
                    await asyncio.sleep(0)
                    if not self._arrived.is_set() or time.perf_counter() >= deadline:
                        break
            batch = self._take()
            if batch:
                self._inflight += 1
                self._jobs.put(batch)
            else:
                self._slots.release()

    def _take(self) -> list[Work]:
        """Pop the oldest live request and every compatible one that fits, FIFO."""
        pending = self.pending
        depth = self.metrics.queue_depth
        while pending and pending[0].future.done():  # expired while waiting
            self._rows -= pending.popleft().rows
            depth.dec()
        if not pending:
            return []
        first = pending.popleft()
        self._rows -= first.rows
        depth.dec()
        batch, rows = [first], first.rows
        if self.model.fixed_batch is None and rows < self.max_rows:
            keep: deque[Work] = deque()
            while pending and rows < self.max_rows:
                w = pending.popleft()
                if w.future.done():
                    self._rows -= w.rows
                    depth.dec()
                elif w.key == first.key and rows + w.rows <= self.max_rows:
                    batch.append(w)
                    rows += w.rows
                    self._rows -= w.rows
                    depth.dec()
                else:
                    keep.append(w)
            keep.extend(pending)
            self.pending = keep
        now = time.perf_counter()
        wait = self.metrics.queue_wait
        for w in batch:
            wait.observe(now - w.enqueued)
        self.metrics.batch_size.observe(rows)
        self.batches += 1
        return batch

    def _complete(
        self, batch: list[Work], outputs: Outputs | None, error: BaseException | None
    ) -> None:
        """Runs on the loop: split outputs back to each request and free the worker."""
        start = 0
        for w in batch:
            end = start + w.rows
            if not w.future.done():
                if error is not None:
                    w.future.set_exception(error)
                else:
                    assert outputs is not None
                    w.future.set_result([o[start:end] for o in outputs])
            start = end
        self._release()

    def _release(self) -> None:
        """Runs on the loop: a batch is done, the worker can take another."""
        self._inflight -= 1
        self._slots.release()

    # --- worker thread ---------------------------------------------------------------

    def _run(self, batch: list[Work]) -> Outputs:
        if len(batch) == 1:
            arrays = batch[0].inputs
        else:
            arrays = [
                np.concatenate([w.inputs[i] for w in batch]) for i in range(len(batch[0].inputs))
            ]
        rows = sum(w.rows for w in batch)
        outputs = self.model.predict(arrays)
        for o in outputs:
            if o.ndim == 0 or o.shape[0] != rows:
                raise RuntimeError(
                    f"model returned an output of shape {tuple(o.shape)} for a batch of {rows} rows"
                )
        return outputs

    def _work(self) -> None:
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        loop = self._loop
        assert loop is not None
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            try:
                outputs = self._run(batch)
                loop.call_soon_threadsafe(self._complete, batch, outputs, None)
                continue
            except Exception:
                if len(batch) == 1:
                    err = InternalError("model failed on this request")
                    log.exception("inference failed (error id %s)", err.error_id)
                    loop.call_soon_threadsafe(self._complete, batch, None, err)
                    continue
            # A batch failed: retry each request alone so only the bad one fails.
            for w in batch:
                try:
                    single = self._run([w])
                    loop.call_soon_threadsafe(self._complete_one, w, single, None)
                except Exception:
                    err = InternalError("model failed on this request")
                    log.exception("inference failed (error id %s)", err.error_id)
                    loop.call_soon_threadsafe(self._complete_one, w, None, err)
            loop.call_soon_threadsafe(self._release)

    def _complete_one(self, w: Work, outputs: Outputs | None, error: BaseException | None) -> None:
        if w.future.done():
            return
        if error is not None:
            w.future.set_exception(error)
        else:
            assert outputs is not None
            w.future.set_result(outputs)
