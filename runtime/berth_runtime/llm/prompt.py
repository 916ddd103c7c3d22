"""Chat messages -> prompt token ids, with message content always encoded as text (pure).

A chat template marks roles and turns with special tokens (``<|user|>``, ``<|end|>``,
``<|im_start|>``, the eos token). Rendering the template to a string and tokenizing that
string would turn the same strings inside a *message* into real control tokens: a user
could close their own turn and open a ``system`` one. So, as servers that guard this do
(tokenize content with special tokens split), every special-token string in a message's
content is first replaced by a private-use marker; the template is rendered; then the
rendered text is tokenized so that only the special tokens the template itself wrote are
special, and the marked strings are encoded as plain text together with the text around
them. A conversation without special-token strings in its content tokenizes exactly as
before (one call of the tokenizer on the rendered text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MARK = "\ue000"
"""Opens and closes a marker (a private-use character; in content it is masked too)."""
_MARKER = re.compile(f"{MARK}(\\d+){MARK}")

Encode = Callable[[str, bool], list[int]]
"""(text, split special tokens?) -> ids, without adding bos/eos."""


class TemplateMangled(ValueError):
    """The template changed a marker (sliced or rewrote message content)."""


@dataclass(frozen=True)
class Masked:
    """Messages whose special-token strings are markers, and the strings they stand for."""

    messages: list[dict[str, str]]
    pieces: list[str]


class SpecialText:
    def __init__(self, specials: Sequence[str]) -> None:
        # longest first: at one position the longest special wins, as in the tokenizer
        self.specials = tuple(sorted({s for s in specials if s}, key=len, reverse=True))
        alternatives = [re.escape(s) for s in (*self.specials, MARK)]
        self._content = re.compile("|".join(alternatives))
        self._special = re.compile("|".join(alternatives[:-1])) if self.specials else None

    def mask(self, messages: Sequence[dict[str, str]]) -> Masked:
        pieces: list[str] = []

        def marker(m: re.Match[str]) -> str:
            pieces.append(m.group(0))
            return f"{MARK}{len(pieces) - 1}{MARK}"

        out = [{**m, "content": self._content.sub(marker, m["content"])} for m in messages]
        return Masked(out, pieces)

    def encode(self, rendered: str, pieces: Sequence[str], encode: Encode) -> list[int]:
        """Token ids of a template rendered from masked messages."""
        if not pieces:
            if MARK in rendered:
                raise TemplateMangled("the template writes U+E000 itself")
            return encode(rendered, False)
        parts = _MARKER.split(rendered)  # text, index, text, index, ..., text
        ids: list[int] = []
        run: list[str] = []  # plain text since the last special token the template wrote
        for i, part in enumerate(parts):
            if i % 2:
                k = int(part)
                if k >= len(pieces):
                    raise TemplateMangled(f"marker {k} names no piece")
                run.append(pieces[k])
                continue
            if MARK in part:
                raise TemplateMangled("a marker was cut")
            pos = 0
            for m in self._special.finditer(part) if self._special else ():
                run.append(part[pos : m.start()])
                ids += self._plain("".join(run), encode)
                run = []
                ids += encode(m.group(0), False)
                pos = m.end()
            run.append(part[pos:])
        return ids + self._plain("".join(run), encode)

    @staticmethod
    def _plain(text: str, encode: Encode) -> list[int]:
        return encode(text, True) if text else []
