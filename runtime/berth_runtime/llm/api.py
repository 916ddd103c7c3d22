"""OpenAI ``/v1/chat/completions`` and ``/v1/completions`` over the batching engine.

A request is parsed and checked (:mod:`.params`), tokenized (the chat template comes from
the tokenizer), capped against the context, admitted by the engine (429 when full), and
then either streamed as server-sent events or collected into one JSON body. Both share
:func:`pieces`, which turns engine outputs into text, applies stop sequences and the
request's deadline (504, or an error event once streaming), and always releases the
request from the engine (a disconnect cancels it at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response

from berth_runtime.batcher import ARRIVAL
from berth_runtime.body import json_object, json_response, read_body
from berth_runtime.errors import BerthError, DeadlineExceeded, InternalError, error_body
from berth_runtime.llm.engine import Generation, failed, new_tokens
from berth_runtime.llm.model import CausalLM
from berth_runtime.llm.params import GenParams, budget, parse_chat, parse_completion
from berth_runtime.llm.sse import EventStream, wait_disconnect
from berth_runtime.llm.text import Detokenizer, StopMatcher
from berth_runtime.state import RuntimeState


@dataclass
class Piece:
    text: str
    finish_reason: str | None = None


@dataclass
class Tally:
    prompt: int
    completion: int = 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


async def pieces(
    state: RuntimeState, model: CausalLM, g: Generation, p: GenParams, tally: Tally
) -> AsyncIterator[Piece]:
    """Text pieces of one generation, the last one with its finish reason."""
    assert model.engine is not None
    engine, metrics = model.engine, state.llm_metrics
    arrival = ARRIVAL.get() or time.perf_counter()
    deadline = arrival + state.settings.timeout_ms / 1000.0
    detok, stops = Detokenizer(model.decode), StopMatcher(p.stop)
    first: float | None = None
    reason = "abort"
    try:
        while True:
            left = deadline - time.perf_counter()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    out = await g.queue.get()
            except TimeoutError:
                raise DeadlineExceeded(
                    f"generation did not finish within {state.settings.timeout_ms:.0f} ms "
                    "(--timeout-ms)"
                ) from None
            if failed(out):
                reason = "error"
                raise InternalError(f"generation failed: {out.error}")
            tokens = new_tokens(g, out)
            if tokens and first is None:
                first = time.perf_counter()
            tally.completion += len(tokens)
            text, hit = stops.feed(detok.push(tokens))
            if not hit and out.is_finished():
                tail, hit = stops.feed(detok.flush())
                text += tail + ("" if hit else stops.flush())
                last = out.generated_tokens[-1] if out.generated_tokens else None
                reason = "stop" if hit or last in model.eos_ids else "length"
                yield Piece(text, reason)
                return
            if hit:
                reason = "stop"
                yield Piece(text, reason)
                return
            if text:
                yield Piece(text)
    finally:
        engine.finish(g)
        if metrics is not None:
            ttft = None if first is None else first - arrival
            metrics.request_done(
                reason, tally.prompt, tally.completion, ttft, time.perf_counter() - arrival
            )


def _admit(state: RuntimeState, name: str) -> CausalLM:
    return cast(CausalLM, state.require_generative(name))


def _submit(model: CausalLM, prompt: list[int], p: GenParams) -> tuple[Generation, Tally]:
    max_new = budget(len(prompt), p.max_tokens, model.context)
    assert model.engine is not None
    g = model.engine.submit(prompt, max_new, p.temperature, p.top_p, p.seed)
    return g, Tally(prompt=len(prompt))


async def _collect(request: Request, stream: AsyncIterator[Piece]) -> tuple[str, str]:
    """All text and the finish reason; a client that leaves cancels the generation."""

    async def gather() -> tuple[str, str]:
        parts, reason = [], "length"
        async for piece in stream:
            parts.append(piece.text)
            reason = piece.finish_reason or reason
        return "".join(parts), reason

    work = asyncio.ensure_future(gather())
    gone = asyncio.ensure_future(wait_disconnect(request.receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()  # the client left: cancelling frees the engine slot at once
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        with contextlib.suppress(asyncio.CancelledError):
            await work  # re-raises a BerthError (deadline, failure) from the generation
        await cast(Any, stream).aclose()
    if work.cancelled():
        raise BerthError("client disconnected")
    return work.result()


def _release(model: CausalLM, g: Generation) -> None:
    if model.engine is not None:
        model.engine.finish(g)


def _sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


async def _events(
    stream: AsyncIterator[Piece],
    frame: Any,
    p: GenParams,
    tally: Tally,
    head: dict[str, Any] | None,
    release: Any,
) -> AsyncIterator[bytes]:
    """SSE frames: an optional head chunk, one per piece, usage when asked, [DONE]."""
    usage_null = {"usage": None} if p.include_usage else {}
    try:
        if head is not None:
            yield _sse({**frame(head, None), **usage_null})
        async for piece in stream:
            if piece.text:
                yield _sse({**frame({"text": piece.text}, None), **usage_null})
            if piece.finish_reason is not None:
                yield _sse({**frame(None, piece.finish_reason), **usage_null})
        if p.include_usage:
            yield _sse({**frame(None, None, empty=True), "usage": tally.usage()})
        yield b"data: [DONE]\n\n"
    except BerthError as err:  # headers are sent: the error travels as an event
        yield _sse(error_body("openai", err))
    finally:
        await cast(Any, stream).aclose()
        release()  # also when the stream never started


def _meta(kind: str, model: str) -> dict[str, Any]:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


async def chat(state: RuntimeState, request: Request) -> Response:
    doc = json_object(await read_body(request, state.settings.max_body_bytes))
    req = parse_chat(doc)
    p = req.params
    model = _admit(state, p.model)
    g, tally = _submit(model, model.chat_prompt(list(req.messages)), p)
    stream = pieces(state, model, g, p, tally)
    if p.stream:
        meta = _meta("chat.completion.chunk", p.model)

        def frame(
            delta: dict[str, str] | None, reason: str | None, *, empty: bool = False
        ) -> dict[str, Any]:
            if empty:
                return {**meta, "choices": []}
            d: dict[str, str] = {}
            if delta is not None:
                d = {"role": delta["role"]} if "role" in delta else {"content": delta["text"]}
                if "role" in delta:
                    d["content"] = ""
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": reason}
            return {**meta, "choices": [choice]}

        head = {"role": "assistant"}
        return EventStream(_events(stream, frame, p, tally, head, lambda: _release(model, g)))
    text, reason = await _collect(request, stream)
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    body = {**_meta("chat.completion", p.model), "choices": [choice], "usage": tally.usage()}
    return json_response(body)


async def completions(state: RuntimeState, request: Request) -> Response:
    doc = json_object(await read_body(request, state.settings.max_body_bytes))
    req = parse_completion(doc)
    p = req.params
    model = _admit(state, p.model)
    prompt = (
        model.encode(req.prompt) if isinstance(req.prompt, str) else model.check_ids(req.prompt)
    )
    g, tally = _submit(model, prompt, p)
    stream = pieces(state, model, g, p, tally)
    if p.stream:
        meta = _meta("text_completion", p.model)

        def frame(
            delta: dict[str, str] | None, reason: str | None, *, empty: bool = False
        ) -> dict[str, Any]:
            if empty:
                return {**meta, "choices": []}
            text = delta["text"] if delta is not None else ""
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            return {**meta, "choices": [choice]}

        return EventStream(_events(stream, frame, p, tally, None, lambda: _release(model, g)))
    text, reason = await _collect(request, stream)
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
    body = {**_meta("text_completion", p.model), "choices": [choice], "usage": tally.usage()}
    return json_response(body)
