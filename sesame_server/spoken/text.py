"""Spoken text that remembers where each character came from in what the client sent.

Every character of the spoken form maps to a [start, end) span of the source: kept
characters to themselves, a rewrite ("$5" -> "five dollars") to the span it replaced,
inserted punctuation and spaces to an empty span where they were inserted. Timestamps for
the original text (ElevenLabs' `alignment`) come from this mapping, never from a guess.

The builder keeps pieces (a run of source text, or a rewrite), not characters: the spoken
text is joined from them at once, and the per-character spans are worked out only when a
caller asks for timestamps. That is what keeps a 4 KB reply within a few milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

TERMINAL = ".!?…:;"
CLOSERS = "\"')]”’"

# (text, source start, source end, kept): kept pieces are the source's own characters.
Piece = tuple[str, int, int, bool]


@dataclass(frozen=True)
class Spoken:
    source: str
    text: str
    pieces: tuple[Piece, ...] | None = field(default=None, repr=False, compare=False)  # None: text is the source

    @cached_property
    def spans(self) -> tuple[tuple[int, int], ...]:
        """One [start, end) source span per character of `text`."""
        if self.pieces is None:
            return tuple(zip(range(len(self.text)), range(1, len(self.text) + 1)))
        return _collapsed_spans(self.pieces)

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
        self._pieces: list[Piece] = []
        self._ended = 0  # how many pieces there were after the last end_sentence
        self.memo: dict = {}  # what a rule works out once per text (acronyms.py: where they are)

    def keep(self, start: int, end: int) -> None:
        """Source characters as they are."""
        if end > start:
            self._pieces.append((self.source[start:end], start, end, True))

    def say(self, text: str, start: int, end: int) -> None:
        """`text` in place of source[start:end]."""
        if text:
            self._pieces.append((text, start, end, False))

    def space(self, at: int) -> None:
        if self._pieces and not self._pieces[-1][0][-1].isspace():
            self.say(" ", at, at)

    def end_sentence(self, at: int) -> None:
        """A full stop after a heading, list item or table row that has none (looking past
        closing brackets and quotes: "Eggs (12)" needs one, "He said 'stop.'" does not)."""
        pieces = self._pieces
        if self._ended == len(pieces):
            return  # nothing said since: the sentence has ended
        first = len(pieces)
        # Back to the last word, piece by piece, and not past the last sentence's end (which
        # ends with its full stop): joined and matched again at each step, a tail of 4,000
        # dropped emoji cost a quadratic scan.
        while first > self._ended:
            first -= 1
            if not _QUIET.fullmatch(pieces[first][0]):
                break
        tail = "".join(piece[0] for piece in pieces[first:])
        last = len(tail.rstrip()) - 1
        inner = last
        while inner >= 0 and tail[inner] in CLOSERS:
            inner -= 1
        if last >= 0 and (inner < 0 or tail[inner] not in TERMINAL):
            index, offset = first, last + 1
            while offset > len(pieces[index][0]):
                offset -= len(pieces[index][0])
                index += 1
            self._insert(index, offset, ".", at)
        self.space(at)
        self._ended = len(pieces)

    def _insert(self, index: int, offset: int, text: str, at: int) -> None:
        """`text` (mapped to nothing at `at`) after the first `offset` characters of piece `index`."""
        piece_text, start, end, kept = self._pieces[index]
        if offset >= len(piece_text):
            self._pieces.insert(index + 1, (text, at, at, False))
            return
        head, tail = piece_text[:offset], piece_text[offset:]
        if kept:
            first, second = (head, start, start + offset, True), (tail, start + offset, end, True)
        else:
            first, second = (head, start, end, False), (tail, start, end, False)
        self._pieces[index:index + 1] = [first, (text, at, at, False), second]

    def build(self) -> Spoken:
        """Whitespace runs become one space; no space before punctuation that ends a phrase
        ("here ." but not "your .env"); trimmed."""
        text = _LOOSE.sub("", " ".join("".join(piece[0] for piece in self._pieces).split()))
        return Spoken(self.source, text, tuple(self._pieces))


# Punctuation that closes a phrase takes no space before it: "here ." -> "here.", "your .env" stays.
_TIGHT = r"""[.,!?;:](?:\s|$|["')\]”’.,!?;:])"""
_LOOSE = re.compile(rf" (?={_TIGHT})")  # on text whose whitespace is already single spaces
_RUNS = re.compile(r"\s+|\S+")
_QUIET = re.compile(rf"[\s{re.escape(CLOSERS)}]*")
_TIGHT_AT = re.compile(_TIGHT)


def _collapsed_spans(pieces: tuple[Piece, ...]) -> tuple[tuple[int, int], ...]:
    """The spans of Builder.build()'s text, worked out character by character (the same
    whitespace rules, run by run)."""
    spans: list[tuple[int, int]] = []
    for text, start, end, kept in pieces:
        if kept:
            spans.extend(zip(range(start, end), range(start + 1, end + 1)))
        else:
            spans.extend([(start, end)] * len(text))
    raw = "".join(piece[0] for piece in pieces)
    out: list[tuple[int, int]] = []
    for run in _RUNS.finditer(raw):
        start, end = run.span()
        if not run.group().isspace():
            out.extend(spans[start:end])
        elif out and end < len(raw) and not _TIGHT_AT.match(raw, end):
            out.append(spans[start])
    return tuple(out)
