"""Character timings of the spoken text carried back to the text the client sent.

ElevenLabs' `normalized_alignment` covers what was spoken, `alignment` what was sent. Given
the spoken characters' timings in order (released chunk by chunk while streaming), each
source character gets: its own spoken character's time (kept text), an even share of its
rewrite's time ("$5" shares "five dollars"), or no time at all where nothing was spoken
(markup, an emoji), placed where the next spoken character starts. Every source character
appears once, in order; times never go back.
"""

from __future__ import annotations

from sesame_server.engine.alignment import Alignment
from sesame_server.spoken.text import Spoken


class SourceTimeline:
    def __init__(self, spoken: Spoken) -> None:
        self.spoken = spoken
        self._spoken_at = 0  # next spoken character to be timed
        self._source_at = 0  # next source character to emit
        self._pending: dict[tuple[int, int], list[float]] = {}  # a rewrite's span -> [start, end] so far
        self._remaining = {}  # span -> spoken characters of it not yet timed
        for span in spoken.spans:
            self._remaining[span] = self._remaining.get(span, 0) + 1

    def advance(self, chunk: Alignment) -> Alignment:
        """The source characters the spoken characters in `chunk` (the next ones) complete."""
        out = Alignment()
        for start, end in zip(chunk.character_start_times_seconds, chunk.character_end_times_seconds):
            if self._spoken_at >= len(self.spoken.spans):
                break
            span = self.spoken.spans[self._spoken_at]
            self._spoken_at += 1
            if span[1] <= span[0]:
                continue  # inserted (a full stop after a heading): no source character
            times = self._pending.setdefault(span, [start, end])
            times[1] = end
            self._remaining[span] -= 1
            if self._remaining[span] == 0:
                del self._pending[span]
                self._emit(out, span, times[0], times[1])
        return out

    def finish(self, end_time: float) -> Alignment:
        """Whatever source text is left (never spoken), at the end."""
        out = Alignment()
        self._untimed(out, len(self.spoken.source), end_time)
        return out

    def _emit(self, out: Alignment, span: tuple[int, int], start: float, end: float) -> None:
        if span[0] < self._source_at:  # overlaps what was already emitted
            span = (self._source_at, span[1])
        self._untimed(out, span[0], start)
        count = span[1] - span[0]
        if count <= 0:
            return
        step = (end - start) / count
        for index in range(count):
            out.characters.append(self.spoken.source[span[0] + index])
            out.character_start_times_seconds.append(round(start + step * index, 4))
            out.character_end_times_seconds.append(round(start + step * (index + 1), 4))
        self._source_at = span[1]

    def _untimed(self, out: Alignment, until: int, at: float) -> None:
        at = max(at, out.character_end_times_seconds[-1] if out.character_end_times_seconds else at)
        while self._source_at < until:
            out.characters.append(self.spoken.source[self._source_at])
            out.character_start_times_seconds.append(round(at, 4))
            out.character_end_times_seconds.append(round(at, 4))
            self._source_at += 1


def source_alignment(spoken: Spoken, timed: Alignment, end_time: float) -> Alignment:
    """The whole source text's alignment from the whole spoken text's."""
    timeline = SourceTimeline(spoken)
    return timeline.advance(timed).extend(timeline.finish(end_time))
