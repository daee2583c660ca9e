"""When text that arrives token by token becomes a piece to speak.

An LLM sends a reply a word (or less) at a time. Speaking each token alone sounds broken;
waiting for the whole reply is slow. A piece is released:
  - at a complete sentence (its end followed by whitespace: the next word has started),
    whatever the mode: the first sentence starts speaking while the rest is being written;
  - without auto mode, once the text waiting reaches the next length of the
    `chunk_length_schedule` (ElevenLabs' [120, 160, 250, 290] by default; the last value
    repeats), cut at the last clause break or space before it;
  - at any length past MAX_SENTENCE_CHARS, cut the same way (no unbounded waiting);
  - on flush, everything waiting;
  - with auto mode, also at the end of a message that ends a sentence: auto mode means the
    client sends whole sentences or phrases (Pipecat sends each sentence as one message,
    with no space after it), so nothing more is needed to know the sentence is complete.
Never inside a word: a cut is always at whitespace, and the word being typed stays, but
for one word longer than `max_piece` (MAX_INPUT_LENGTH), cut at that length. No piece is
longer than `max_piece`: what is released at once goes out as several pieces, cut at
sentence ends, else at whitespace (`bounded_pieces`), so one huge message is many jobs and
other requests are served between them.
Messages are joined as sent, but for one case: a message that starts with a capital right
after a sentence's end gets a space ("friend." + "How" is "friend. How", not one word).
Each message is scanned for sentence ends from shortly before it, not from the start of the
buffer: many small messages cost what their length does.
"""

from __future__ import annotations

import re

from sesame_server.engine.text import MAX_SENTENCE_CHARS, sentence_ends

DEFAULT_SCHEDULE = (120, 160, 250, 290)
MIN_SCHEDULE, MAX_SCHEDULE = 50, 500  # ElevenLabs' accepted range for each value
DEFAULT_MAX_PIECE = 4096  # Settings.max_input_length's default
# Re-read before the new text: the word an end's punctuation closes (abbreviation or not).
# Longer words only lose the check against the abbreviation list, which holds short ones.
_OVERLAP = 64
_CLAUSE_BREAK = re.compile(r"[,;:—–]\s")
_ENDS_SENTENCE = re.compile(r"""[.!?…]["'”’)\]]*$""")
_SPACE = re.compile(r"\s")
_LAST_SPACE = re.compile(r".*\s", re.DOTALL)


def bounded_pieces(text: str, limit: int) -> list[str]:
    """`text` as pieces of at most `limit` characters, in order: each cut after the last
    sentence end that fits, else at the last whitespace, else (one giant word) at `limit`.
    Each cut reads only the `limit` characters it may take."""
    pieces = []
    text = text.strip()
    while len(text) > limit:
        window = text[:limit + 1]
        ends = sentence_ends(window)
        space = _LAST_SPACE.match(window)
        cut = ends[-1] if ends else (space.end() - 1 if space else 0)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return [piece for piece in pieces if piece]


class TextBuffer:
    def __init__(self, schedule: tuple[int, ...] = DEFAULT_SCHEDULE, *, auto_mode: bool = False,
                 max_piece: int = DEFAULT_MAX_PIECE) -> None:
        self.schedule = tuple(schedule) or DEFAULT_SCHEDULE
        self.auto_mode = auto_mode
        self.max_piece = max_piece
        self._text = ""
        self._scanned = 0  # text[:_scanned] was scanned for sentence ends (all found are released)
        self._released = 0  # pieces released so far: picks the schedule's next length

    @property
    def pending(self) -> str:
        return self._text

    def add(self, text: str) -> list[str]:
        """Take one message's `text` (it may end mid-word); the pieces ready to speak now."""
        if text[:1].isupper() and _ENDS_SENTENCE.search(self._text[-_OVERLAP:]):
            text = " " + text
        self._text += text
        pieces = self._take(self._last_sentence_end())  # every complete sentence waiting
        while (piece := self._next_cut()) is not None:
            pieces.append(piece)
        if self.auto_mode and self._ends_a_sentence():
            pieces += self._take(len(self._text))
        return pieces

    def flush(self) -> list[str]:
        """Everything waiting, in pieces of at most `max_piece` (none: nothing to say)."""
        return self._take(len(self._text))

    def trigger(self) -> list[str]:
        """try_trigger_generation: what waits up to the last word boundary, if anything."""
        return self._take(self._word_cut(len(self._text)))

    def _last_sentence_end(self) -> int:
        """Where the last complete sentence ends (0: none), scanning from shortly before
        the text not scanned yet, at a word's start."""
        start = self._word_start(self._scanned - _OVERLAP)
        ends = sentence_ends(self._text[start:])
        self._scanned = len(self._text)
        return start + ends[-1] if ends else 0

    def _word_start(self, position: int) -> int:
        """The first whitespace at or after `position` within _OVERLAP (or `position`)."""
        if position <= 0:
            return 0
        space = _SPACE.search(self._text, position, position + _OVERLAP)
        return space.start() if space else position

    def _ends_a_sentence(self) -> bool:
        start = self._word_start(len(self._text) - _OVERLAP)
        text = self._text[start:].rstrip()
        ends = sentence_ends(text + " ")  # as if the next word had started
        return bool(text) and bool(ends) and ends[-1] >= len(text)

    def _next_cut(self) -> str | None:
        """A piece by length: the schedule, MAX_SENTENCE_CHARS, `max_piece`."""
        limit = MAX_SENTENCE_CHARS if self.auto_mode else min(self._threshold(), MAX_SENTENCE_CHARS)
        limit = min(limit, self.max_piece)
        if len(self._text) < limit or len(self._text.strip()) < limit:
            return None
        cut = self._clause_cut(limit) or self._word_cut(limit)
        if not cut and len(self._text) > self.max_piece:
            cut = self.max_piece  # one word longer than a piece may be
        return self._release(cut) if cut else None

    def _threshold(self) -> int:
        return self.schedule[min(self._released, len(self.schedule) - 1)]

    def _clause_cut(self, limit: int) -> int:
        """After the last clause break before `limit`, if it keeps at least half."""
        breaks = [m.start() + 1 for m in _CLAUSE_BREAK.finditer(self._text, 0, limit + 1)]
        return breaks[-1] if breaks and breaks[-1] >= limit // 2 else 0

    def _word_cut(self, limit: int) -> int:
        """At the last whitespace at or before `limit` that follows a word (0: none yet).
        Text that does not end in whitespace ends mid-word: that word stays."""
        head = self._text[:limit + 1]
        if limit >= len(self._text) and self._text[-1:].isspace():
            return len(self._text)
        cut = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        return cut if cut > 0 and head[:cut].strip() else 0

    def _take(self, cut: int) -> list[str]:
        """text[:cut] released, as pieces of at most `max_piece`."""
        piece = self._release(cut) if cut else None
        if piece is None:
            return []
        pieces = bounded_pieces(piece, self.max_piece)
        self._released += len(pieces) - 1
        return pieces

    def _release(self, cut: int) -> str | None:
        before = len(self._text)
        piece, self._text = self._text[:cut].strip(), self._text[cut:].lstrip()
        self._scanned = max(0, self._scanned - (before - len(self._text)))
        if not piece:
            return None
        self._released += 1
        return piece
