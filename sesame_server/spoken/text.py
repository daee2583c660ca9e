"""Spoken text that remembers where each character came from in what the client sent.

Every character of the spoken form maps to a [start, end) span of the source: kept
characters to themselves, a rewrite ("$5" -> "five dollars") to the span it replaced,
inserted punctuation and spaces to an empty span where they were inserted. Timestamps for
the original text (ElevenLabs' `alignment`) come from this mapping, never from a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TERMINAL = ".!?…:;"
CLOSERS = "\"')]”’"


@dataclass(frozen=True)
class Spoken:
    source: str
    text: str
    spans: tuple[tuple[int, int], ...]  # one per character of `text`

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The source characters behind text[start:end] (an empty span if none)."""
        covered = [span for span in self.spans[start:end] if span[1] > span[0]]
        if not covered:
            at = self.spans[start][0] if start < len(self.spans) else len(self.source)
            return at, at
        return min(s for s, _ in covered), max(e for _, e in covered)


class Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self._chars: list[str] = []
        self._spans: list[tuple[int, int]] = []

    def keep(self, start: int, end: int) -> None:
        """Source characters as they are."""
        self._chars.extend(self.source[start:end])
        self._spans.extend(zip(range(start, end), range(start + 1, end + 1)))

    def say(self, text: str, start: int, end: int) -> None:
        """`text` in place of source[start:end]."""
        self._chars.extend(text)
        self._spans.extend([(start, end)] * len(text))

    def space(self, at: int) -> None:
        if self._chars and not self._chars[-1].isspace():
            self.say(" ", at, at)

    def end_sentence(self, at: int) -> None:
        """A full stop after a heading, list item or table row that has none (looking past
        closing brackets and quotes: "Eggs (12)" needs one, "He said 'stop.'" does not)."""
        last = len(self._chars) - 1
        while last >= 0 and self._chars[last].isspace():
            last -= 1
        inner = last
        while inner >= 0 and self._chars[inner] in CLOSERS:
            inner -= 1
        if last >= 0 and (inner < 0 or self._chars[inner] not in TERMINAL):
            self._chars.insert(last + 1, ".")
            self._spans.insert(last + 1, (at, at))
        self.space(at)

    def build(self) -> Spoken:
        """Whitespace runs become one space; no space before punctuation that ends a phrase
        ("here ." but not "your .env"); trimmed. Run by run, not character by character."""
        text = "".join(self._chars)
        chars: list[str] = []
        spans: list[tuple[int, int]] = []
        for run in _RUNS.finditer(text):
            start, end = run.span()
            if not run.group().isspace():
                chars.append(run.group())
                spans.extend(self._spans[start:end])
            elif chars and end < len(text) and not _TIGHT.match(text, end):
                chars.append(" ")
                spans.append(self._spans[start])
        return Spoken(self.source, "".join(chars), tuple(spans))


_RUNS = re.compile(r"\s+|\S+")
# Punctuation that closes a phrase takes no space before it: "here ." -> "here.", "your .env" stays.
_TIGHT = re.compile(r"""[.,!?;:](?:\s|$|["')\]”’.,!?;:])""")
