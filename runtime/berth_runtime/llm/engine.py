"""Continuous batching: transformers' ContinuousBatchingManager, driven from the event loop.

transformers (5.x) already schedules what Berth needs: a paged KV cache, a FIFO scheduler
that adds waiting requests to the running batch between forward passes (prefill chunks and
decode steps share a pass), finished and cancelled requests leaving at once, and one
background thread owning the device. It runs on CPU as well as CUDA. Berth adds around it:

- admission: at most ``max_running + max_queue`` requests at once, else 429 + Retry-After
  (the manager's own queue would block the caller for 10 s instead);
- per-request sampling and seeds (:mod:`berth_runtime.llm.sampling`);
- delivery: every new token is handed to the request's asyncio queue through the
  manager's result handler (``call_soon_threadsafe``); nothing polls;
- cancellation: a deadline or a disconnect cancels the request in the manager, which
  frees its cache blocks before the next pass.

CUDA graphs and async double-buffering are off because the sampler runs Python per row
(see sampling.py); on a GPU that costs some decode speed (planned: a vectorised sampler).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching import ContinuousBatchingManager
from transformers.generation.continuous_batching.requests import GenerationOutput, RequestStatus

from berth_runtime.errors import Overloaded
from berth_runtime.llm.sampling import SLOT_KWARG, SeededSampler, processor_list

log = logging.getLogger("berth.llm")


@dataclass(frozen=True)
class EngineConfig:
    max_running: int = 32
    """Requests decoded together in one pass (the batch's slots)."""
    max_queue: int = 1024
    """Requests admitted beyond the running ones before 429."""
    page_size: int = 16
    """Tokens per KV-cache page (block)."""
    kv_blocks: int = 0
    """KV-cache pages; 0 sizes the cache for max_running full contexts."""
    max_batch_tokens: int = 0
    """Tokens per forward pass (prompt chunks + one per decoding request); 0 picks 2048."""
    context: int = 2048
    """Longest prompt + generation, in tokens."""


@dataclass
class Generation:
    """One request inside the engine, seen from the event loop."""

    request_id: str
    prompt_tokens: int
    slot: int
    queue: asyncio.Queue[GenerationOutput] = field(default_factory=asyncio.Queue)
    seen: int = 0
    ended: bool = False
    """The manager finished (or failed) it: nothing to cancel."""
    done: bool = False
    """Released by :meth:`Engine.finish`."""


class Engine:
    def __init__(self, model: torch.nn.Module, eos_ids: Sequence[int], cfg: EngineConfig) -> None:
        self.cfg = cfg
        kv_blocks = cfg.kv_blocks or cfg.max_running * math.ceil(cfg.context / cfg.page_size)
        self.kv_blocks = kv_blocks
        gen = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False,
            max_new_tokens=cfg.context,
            eos_token_id=list(eos_ids) or -1,
            pad_token_id=eos_ids[0] if eos_ids else 0,
        )
        cb = ContinuousBatchingConfig(
            page_size=cfg.page_size,
            num_blocks=kv_blocks,
            max_batch_tokens=cfg.max_batch_tokens or 2048,
            max_requests_per_batch=cfg.max_running,
            use_cuda_graph=False,
            use_async_batching=False,
            allow_block_sharing=True,
            cpu_offload_space=0.0,
            seed=0,
        )
        self.sampler = SeededSampler(next(model.parameters()).device)
        self.manager = ContinuousBatchingManager(model, gen, cb)  # type: ignore[arg-type]
        self.manager.logit_processor = processor_list(self.sampler)
        self.admitted = 0
        self._ids = itertools.count()
        self.forward_passes_offset = 0

    def start(self) -> None:
        self.manager.start()

    def stop(self) -> None:
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=10)

    # --- observed state (read at scrape time) ---------------------------------------

    @property
    def forward_passes(self) -> int:
        """Forward passes since start (prefill chunks and decode steps together)."""
        return int(getattr(self.manager, "current_batch", 0))

    def counts(self) -> tuple[int, int, float]:
        """(waiting, running, KV-cache usage 0..1) from the scheduler's own state.

        Usage counts the pages the running requests' tokens fill (prompt + generated),
        over the cache's pages; shared prefix pages are counted once per request.
        """
        bp = self.manager.batch_processor
        queued = self.manager.input_queue.qsize()
        if bp is None:
            return queued, 0, 0.0
        for _ in range(3):  # the engine thread may resize the dicts while we copy them
            try:
                waiting = len(bp.scheduler.waiting_requests)
                active = list(bp.scheduler.active_requests.values())
                page = self.cfg.page_size
                blocks = sum(
                    -(-(len(s.initial_tokens) + len(s.generated_tokens)) // page) for s in active
                )
                return queued + waiting, len(active), min(1.0, blocks / max(1, self.kv_blocks))
            except RuntimeError:
                continue
        return queued, 0, 0.0

    # --- requests (event loop) ------------------------------------------------------

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> Generation:
        limit = self.cfg.max_running + self.cfg.max_queue
        if self.admitted >= limit:
            raise Overloaded(
                f"{self.admitted} generation requests are admitted, the most this server takes "
                f"({self.cfg.max_running} running + {self.cfg.max_queue} queued: --max-batch-size "
                "and --max-queue); retry later"
            )
        if not self.manager.is_running():
            raise RuntimeError("the generation engine is not running")
        slot = self.sampler.register(temperature, top_p, seed)
        rid = f"berth-{next(self._ids)}"
        g = Generation(request_id=rid, prompt_tokens=len(prompt_ids), slot=slot)
        self.manager.register_result_handler(rid, g.queue.put_nowait)
        kwargs = {SLOT_KWARG: slot} if slot else {}
        self.admitted += 1
        self.manager.add_request(
            list(prompt_ids),
            request_id=rid,
            max_new_tokens=max_new_tokens,
            streaming=True,
            **kwargs,  # type: ignore[arg-type]
        )
        return g

    def finish(self, g: Generation) -> None:
        """Release a request: cancel it in the manager unless it already finished there."""
        if g.done:
            return
        g.done = True
        self.admitted -= 1
        self.sampler.release(g.slot)
        with self.manager.output_router._lock:
            self.manager.output_router.result_handlers.pop(g.request_id, None)
        if not g.ended:
            self.manager.cancel_request(g.request_id)


def new_tokens(g: Generation, out: GenerationOutput) -> list[int]:
    """The tokens of ``out`` not yet seen by this request."""
    tokens = out.generated_tokens[g.seen :]
    g.seen = len(out.generated_tokens)
    if out.is_finished():
        g.ended = True
    return list(tokens)


def failed(out: GenerationOutput) -> bool:
    return out.status == RequestStatus.FAILED or out.error is not None
