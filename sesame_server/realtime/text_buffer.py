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
Never inside a word: a cut is always at whitespace, and the word being typed stays.
Messages are joined as sent, but for one case: a message that starts with a capital right
after a sentence's end gets a space ("friend." + "How" is "friend. How", not one word).
"""

from __future__ import annotations

import re

from sesame_server.engine.text import MAX_SENTENCE_CHARS, sentence_ends

DEFAULT_SCHEDULE = (120, 160, 250, 290)
MIN_SCHEDULE, MAX_SCHEDULE = 50, 500  # ElevenLabs' accepted range for each value
_CLAUSE_BREAK = re.compile(r"[,;:—–]\s")
_ENDS_SENTENCE = re.compile(r"""[.!?…]["'”’)\]]*$""")


class TextBuffer:
    def __init__(self, schedule: tuple[int, ...] = DEFAULT_SCHEDULE, *, auto_mode: bool = False) -> None:
        self.schedule = tuple(schedule) or DEFAULT_SCHEDULE
        self.auto_mode = auto_mode
        self._text = ""
        self._released = 0  # pieces released so far: picks the schedule's next length

    @property
    def pending(self) -> str:
        return self._text

    def add(self, text: str) -> list[str]:
        """Take one message's `text` (it may end mid-word); the pieces ready to speak now."""
        if text[:1].isupper() and _ENDS_SENTENCE.search(self._text):
            text = " " + text
        self._text += text
        pieces = []
        while (piece := self._next_piece()) is not None:
            pieces.append(piece)
        if self.auto_mode and self._ends_a_sentence():
            pieces.append(self._release(len(self._text)))
        return [piece for piece in pieces if piece]

    def _ends_a_sentence(self) -> bool:
        text = self._text.rstrip()
        ends = sentence_ends(text + " ")  # as if the next word had started
        return bool(text) and bool(ends) and ends[-1] >= len(text)

    def flush(self) -> str | None:
        """Everything waiting, as one piece (None if there is nothing to say)."""
        return self._release(len(self._text))

    def trigger(self) -> str | None:
        """try_trigger_generation: what waits up to the last word boundary, if anything."""
        cut = self._word_cut(len(self._text))
        return self._release(cut) if cut else None

    def _next_piece(self) -> str | None:
        ends = sentence_ends(self._text)
        if ends:
            return self._release(ends[-1])  # every complete sentence waiting, as one piece
        limit = MAX_SENTENCE_CHARS if self.auto_mode else min(self._threshold(), MAX_SENTENCE_CHARS)
        if len(self._text.strip()) < limit:
            return None
        cut = self._clause_cut(limit) or self._word_cut(limit)
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

    def _release(self, cut: int) -> str | None:
        piece, self._text = self._text[:cut].strip(), self._text[cut:].lstrip()
        if not piece:
            return None
        self._released += 1
        return piece
