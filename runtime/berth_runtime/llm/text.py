"""Tokens -> text as they arrive, and stop sequences (pure; no torch, no threads).

:class:`Detokenizer` decodes incrementally the way vLLM does: it re-decodes a short window
(the tokens already shown plus the new ones) and emits only the text that grew, holding
back an incomplete UTF-8 character ("\\ufffd") until its bytes arrive. Bytes that never
form a character (the model wrote invalid UTF-8, or the answer ended inside a character:
max_tokens, a stop) are dropped, never sent as U+FFFD, so no piece ever holds a broken
character; streamed and whole answers go through the same decoder and stay equal.
:class:`StopMatcher` holds back at most ``len(longest stop) - 1`` characters so a stop
sequence split across tokens is still caught, and cuts the text where it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]
BROKEN = "\ufffd"
"""What the tokenizer's lossy UTF-8 decoding writes for bytes that are no character."""


def _whole(text: str) -> str:
    return text.replace(BROKEN, "")


class Detokenizer:
    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # window start: tokens before it are never decoded again
        self._read = 0  # tokens whose text has been emitted

    def push(self, new_ids: Sequence[int]) -> str:
        """Add tokens; return the text they complete (possibly empty)."""
        self.ids.extend(new_ids)
        shown = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        if len(text) > len(shown) and not text.endswith(BROKEN):
            self._prefix, self._read = self._read, len(self.ids)
            return _whole(text[len(shown) :])
        return ""

    def flush(self) -> str:
        """The text still held back at the end, without the character it leaves unfinished."""
        shown = self._decode(self.ids[self._prefix : self._read])
        text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return _whole(text[len(shown) :]) if len(text) > len(shown) else ""


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop sequence was reached (text ends before it)."""
        self._pending += text
        cuts = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if cuts:
            out = self._pending[: min(cuts)]
            self._pending = ""
            return out, True
        keep = min(self._hold, len(self._pending))
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
