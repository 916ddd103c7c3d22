"""OpenAI chat and completion request bodies -> plain generation parameters (pure).

Every field is checked here, before tokenization or queueing: a wrong type or range is a
400 naming the field, and a parameter Berth does not implement is a 400 naming it (never
silently ignored). A few parameters are accepted only at their no-op value (``n`` = 1,
``presence_penalty`` = 0, ...), so clients that always send defaults keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from berth_runtime.errors import BadRequest

MAX_STOP = 4
"""OpenAI's limit on stop sequences."""

# Accepted everywhere and used.
_COMMON = frozenset(
    {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "stream",
        "stream_options",
        "user",
        "n",
    }
)
_CHAT = _COMMON | {"messages", "max_completion_tokens"}
_COMPLETION = _COMMON | {"prompt"}

# Accepted only at the value that changes nothing.
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None,),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None,),
    "tools": (None,),
    "tool_choice": (None, "none"),
    "parallel_tool_calls": (None,),
    "functions": (None,),
    "function_call": (None, "none"),
    "response_format": (None,),
    "store": (None, False),
    "metadata": (None,),
    "service_tier": (None, "auto", "default"),
}
_ROLES = ("system", "developer", "user", "assistant")


@dataclass(frozen=True)
class GenParams:
    """What one request asks the engine for, independent of chat or completion."""

    model: str
    max_tokens: int | None
    """None: up to the context length."""
    temperature: float
    """0 is greedy (argmax), as with model.generate(do_sample=False)."""
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class ChatRequest:
    params: GenParams
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class CompletionRequest:
    params: GenParams
    prompt: str | tuple[int, ...]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refuse_unknown(doc: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(k for k in doc if k not in allowed and k not in _NEUTRAL)
    if unknown:
        raise BadRequest(f"unsupported parameter(s): {', '.join(unknown)}")
    used = sorted(k for k, ok in _NEUTRAL.items() if k in doc and not _neutral(doc[k], ok))
    if used:
        raise BadRequest(
            f"unsupported parameter(s): {', '.join(used)} (only their default values are accepted)"
        )


def _neutral(value: object, ok: tuple[object, ...]) -> bool:
    """True when ``value`` is one of the no-op values (``False`` is not ``0``; ``{}`` is None)."""
    if value in ({}, []) and None in ok:
        return True
    return any(value == v and type(value) is type(v) for v in ok)


def _optional_int(doc: dict[str, Any], key: str, low: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not int or value < low:
        raise BadRequest(f"{key} must be an integer >= {low}, got {value!r}")
    return value


def _params(doc: dict[str, Any], max_key: str | None) -> GenParams:
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model must be a string naming the served model")
    max_tokens = _optional_int(doc, "max_tokens", 1)
    if max_key is not None and doc.get(max_key) is not None:
        other = _optional_int(doc, max_key, 1)
        if max_tokens is not None and other != max_tokens:
            raise BadRequest(f"max_tokens ({max_tokens}) and {max_key} ({other}) disagree")
        max_tokens = other
    temperature = doc.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise BadRequest(f"temperature must be a number from 0 to 2, got {temperature!r}")
    top_p = doc.get("top_p", 1.0)
    if top_p is None:
        top_p = 1.0
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise BadRequest(f"top_p must be a number in (0, 1], got {top_p!r}")
    n = doc.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise BadRequest(f"n must be 1 (one choice per request), got {n!r}")
    stop_raw = doc.get("stop")
    if stop_raw is None:
        stop: tuple[str, ...] = ()
    elif isinstance(stop_raw, str):
        stop = (stop_raw,)
    elif isinstance(stop_raw, list) and all(isinstance(s, str) for s in stop_raw):
        stop = tuple(stop_raw)
    else:
        raise BadRequest("stop must be a string or a list of strings")
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise BadRequest(f"stop takes at most {MAX_STOP} non-empty strings")
    seed = doc.get("seed")
    if seed is not None and (type(seed) is not int or not -(2**63) <= seed < 2**63):
        raise BadRequest(f"seed must be a 64-bit integer, got {seed!r}")
    stream = doc.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be a boolean, got {stream!r}")
    options = doc.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise BadRequest("stream_options is only allowed with stream: true")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise BadRequest('stream_options must be an object with only "include_usage"')
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise BadRequest("stream_options.include_usage must be a boolean")
    user = doc.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user must be a string")
    return GenParams(
        model=model,
        max_tokens=max_tokens,
        temperature=float(temperature),
        top_p=float(top_p),
        stop=stop,
        seed=seed,
        stream=stream,
        include_usage=include_usage,
    )


def _content(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: only text parts are served
        parts: list[str] = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(
                    f"{where}[{i}] must be a text part (images and audio are not supported)"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"{where}[{i}].text must be a string")
            parts.append(text)
        return "".join(parts)
    raise BadRequest(f"{where} must be a string or a list of text parts")


def parse_chat(doc: dict[str, Any]) -> ChatRequest:
    """A /v1/chat/completions body -> ChatRequest, or a 400 naming the field."""
    _refuse_unknown(doc, _CHAT)
    params = _params(doc, "max_completion_tokens")
    raw = doc.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list of {role, content} objects")
    messages: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object with role and content")
        role = m.get("role")
        if role not in _ROLES:
            raise BadRequest(
                f"messages[{i}].role must be one of {', '.join(_ROLES)}, got {role!r} "
                "(tool messages are not supported)"
            )
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise BadRequest(f"messages[{i}]: unsupported field(s) {', '.join(extra)}")
        messages.append(
            {"role": role, "content": _content(m.get("content"), f"messages[{i}].content")}
        )
    return ChatRequest(params=params, messages=tuple(messages))


def parse_completion(doc: dict[str, Any]) -> CompletionRequest:
    """A /v1/completions body -> CompletionRequest, or a 400 naming the field."""
    _refuse_unknown(doc, _COMPLETION)
    params = _params(doc, None)
    raw = doc.get("prompt")
    prompt: str | tuple[int, ...]
    if isinstance(raw, str):
        prompt = raw
    elif isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        prompt = raw[0]
    elif isinstance(raw, list) and raw and all(type(t) is int and t >= 0 for t in raw):
        prompt = tuple(raw)
    else:
        raise BadRequest("prompt must be a string or a list of token ids (one prompt per request)")
    return CompletionRequest(params=params, prompt=prompt)


def budget(prompt_tokens: int, max_tokens: int | None, context: int) -> int:
    """How many tokens to generate, or a 400 naming the context limit when it cannot fit."""
    if prompt_tokens < 1:
        raise BadRequest("the prompt is empty after tokenization; send at least one token")
    if prompt_tokens >= context:
        raise BadRequest(
            f"the prompt has {prompt_tokens} tokens; this model's context is {context} tokens "
            "(--max-model-len), which leaves no room to generate"
        )
    room = context - prompt_tokens
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise BadRequest(
            f"max_tokens ({max_tokens}) plus the prompt ({prompt_tokens} tokens) exceeds this "
            f"model's context of {context} tokens (--max-model-len); at most {room} fit"
        )
    return max_tokens
