"""Pure parts of the LLM routes: request parsing, the context budget, detokenizing, stops."""

from __future__ import annotations

from typing import Any

import pytest
from berth_runtime.errors import BadRequest
from berth_runtime.llm.params import budget, parse_chat, parse_completion
from berth_runtime.llm.text import Detokenizer, StopMatcher

pytestmark = pytest.mark.unit

MSG = [{"role": "user", "content": "hi"}]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MSG, **extra}


def test_chat_defaults() -> None:
    p = parse_chat(chat()).params
    assert (p.max_tokens, p.temperature, p.top_p, p.stop, p.seed, p.stream) == (
        None,
        1.0,
        1.0,
        (),
        None,
        False,
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (chat(logprobs=True), "logprobs"),  # a real OpenAI feature we do not implement: named
        (chat(frobnicate=1), "frobnicate"),  # unknown keys are not ignored silently
        (chat(tools=[{"type": "function"}]), "tools"),  # tool calling is not served
        (chat(presence_penalty=0.5), "presence_penalty"),  # only the no-op value passes
        (chat(n=2), "n must be 1"),  # one choice per request
        (chat(temperature=2.5), "temperature"),  # OpenAI's range is 0..2
        (chat(temperature="hot"), "temperature"),  # no coercion from strings
        (chat(top_p=0), "top_p"),  # an empty nucleus cannot sample
        (chat(max_tokens=0), "max_tokens"),  # must generate at least one token
        (chat(max_tokens=True), "max_tokens"),  # a boolean is not an integer
        (chat(max_tokens=5, max_completion_tokens=6), "disagree"),  # two limits that differ
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),  # OpenAI allows four
        (chat(stop=[""]), "stop"),  # an empty stop would end every answer at once
        (chat(seed=1.5), "seed"),  # seeds are integers
        (chat(stream_options={"include_usage": True}), "stream_options"),  # needs stream
        (chat(stream=True, stream_options={"x": 1}), "stream_options"),  # only include_usage
        ({"model": "m", "messages": []}, "messages"),  # nothing to answer
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "role"),  # no tools
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "content"),  # not text
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "text",
        ),
        ({"messages": MSG}, "model"),  # the model must be named
    ],
)
def test_chat_refusals_name_the_field(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_chat(body)


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        # clients that always send defaults keep working
        ({"presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False}, None),
        ({"max_completion_tokens": 7}, ("max_tokens", 7)),  # the newer name
        ({"stop": "END"}, ("stop", ("END",))),  # a single string is one stop
        ({"stream": True, "stream_options": {"include_usage": True}}, ("include_usage", True)),
        ({"temperature": 0, "seed": 42}, ("seed", 42)),  # greedy with a seed is accepted
        ({"tool_choice": "none", "response_format": None}, None),  # neutral values
    ],
)
def test_chat_accepts(extra: dict[str, Any], check: tuple[str, object] | None) -> None:
    p = parse_chat(chat(**extra)).params
    if check is not None:
        assert getattr(p, check[0]) == check[1]


def test_chat_text_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    req = parse_chat({"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert req.messages[0]["content"] == "ab"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("hello", "hello"),  # the usual case
        (["hello"], "hello"),  # a one-element list, as some clients send
        ([1, 2, 3], (1, 2, 3)),  # token ids
    ],
)
def test_completion_prompts(prompt: object, expected: object) -> None:
    assert parse_completion({"model": "m", "prompt": prompt}).prompt == expected


@pytest.mark.parametrize(
    "prompt",
    [
        ["a", "b"],  # several prompts: one per request
        [],  # nothing
        [1, -2],  # negative token ids
        None,  # missing
    ],
)
def test_completion_prompt_refusals(prompt: object) -> None:
    with pytest.raises(BadRequest, match="prompt"):
        parse_completion({"model": "m", "prompt": prompt})


def test_completion_refuses_chat_only_fields() -> None:
    with pytest.raises(BadRequest, match="max_completion_tokens"):
        parse_completion({"model": "m", "prompt": "x", "max_completion_tokens": 3})


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "context", "expected"),
    [
        (10, None, 100, 90),  # no max_tokens: the rest of the context
        (10, 90, 100, 90),  # exactly fits
        (10, 5, 100, 5),  # the request's own limit
    ],
)
def test_budget(prompt: int, max_tokens: int | None, context: int, expected: int) -> None:
    assert budget(prompt, max_tokens, context) == expected


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "fragment"),
    [
        (100, None, "context is 100 tokens"),  # the prompt alone fills the context
        (10, 91, "at most 90 fit"),  # one too many
        (0, 5, "empty"),  # nothing to condition on
    ],
)
def test_budget_refusals_name_the_limit(prompt: int, max_tokens: int | None, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        budget(prompt, max_tokens, 100)


def test_detokenizer_holds_back_split_characters() -> None:
    data = "héllo".encode()
    # one byte per token: the two bytes of "é" arrive separately
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731
    d = Detokenizer(decode)
    out = [d.push([b]) for b in data]
    assert out == ["h", "", "é", "l", "l", "o"]
    assert d.flush() == ""


def test_detokenizer_drops_an_incomplete_tail() -> None:
    # the answer ended inside a character: its bytes are no character, so nothing is sent
    # (it was sent as U+FFFD before)
    d = Detokenizer(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    assert d.push([0x61]) == "a"
    assert d.push([0xC3]) == ""
    assert d.flush() == ""


@pytest.mark.parametrize(
    ("stops", "pieces", "expected", "stopped"),
    [
        ((), ["ab", "cd"], "abcd", False),  # no stops: everything passes at once
        (("END",), ["foo E", "N", "D bar"], "foo ", True),  # a stop split over three pieces
        (("x", "yz"), ["aay", "zx"], "aa", True),  # the earliest stop wins
        (("END",), ["EN", "d!"], "ENd!", False),  # a near miss is released at the end
    ],
)
def test_stop_matcher(
    stops: tuple[str, ...], pieces: list[str], expected: str, stopped: bool
) -> None:
    m = StopMatcher(stops)
    out, hit = "", False
    for p in pieces:
        text, hit = m.feed(p)
        out += text
        if hit:
            break
    if not hit:
        out += m.flush()
    assert (out, hit) == (expected, stopped)
