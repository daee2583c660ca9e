"""Character timestamps for the ElevenLabs `with-timestamps` endpoints.

Neither backend reports character alignment, so this is an estimate: each character gets
a share of the speech time by weight (letters and digits 1, spaces 0.6, punctuation that
makes a pause more), scaled so the last character ends where the audio ends. While
streaming, the total is not known yet: characters are released once the audio generated
so far covers their estimated end, at the rate guessed from the text length, and the
remainder is placed at the end. Every character appears exactly once, times are monotonic
and within the audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PAUSES = {",": 2.0, ";": 2.5, ":": 2.5, ".": 4.0, "!": 4.0, "?": 4.0, "…": 4.0, "\n": 3.0}
CHARS_PER_SECOND = 15.0  # typical conversational speaking rate at speed 1.0


def _weight(char: str) -> float:
    if char in _PAUSES:
        return _PAUSES[char]
    if char.isspace():
        return 0.6
    return 1.0


@dataclass
class Alignment:
    characters: list[str] = field(default_factory=list)
    character_start_times_seconds: list[float] = field(default_factory=list)
    character_end_times_seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "characters": self.characters,
            "character_start_times_seconds": self.character_start_times_seconds,
            "character_end_times_seconds": self.character_end_times_seconds,
        }

    def __bool__(self) -> bool:
        return bool(self.characters)

    def extend(self, more: "Alignment") -> "Alignment":
        self.characters.extend(more.characters)
        self.character_start_times_seconds.extend(more.character_start_times_seconds)
        self.character_end_times_seconds.extend(more.character_end_times_seconds)
        return self


class CharacterTimeline:
    """Releases estimated character timings as audio seconds accumulate."""

    def __init__(self, text: str, speed: float = 1.0):
        self.text = text
        self._weights = [_weight(c) for c in text]
        total_weight = sum(self._weights) or 1.0
        expected_seconds = max(len(text), 1) / CHARS_PER_SECOND / speed
        self._seconds_per_weight = expected_seconds / total_weight
        self._next = 0  # index of the next character to release
        self._time = 0.0  # end time of the last released character

    def advance(self, audio_seconds: float) -> Alignment:
        """Characters whose estimated end falls within the first `audio_seconds` of audio."""
        out = Alignment()
        while self._next < len(self.text):
            end = self._time + self._weights[self._next] * self._seconds_per_weight
            if end > audio_seconds:
                break
            self._emit(out, end)
        return out

    def finish(self, audio_seconds: float) -> Alignment:
        """Every character not yet released, spread over the audio that remains."""
        out = Alignment()
        remaining = self._weights[self._next:]
        if not remaining:
            return out
        span = max(audio_seconds - self._time, 0.0)
        per_weight = span / (sum(remaining) or 1.0)
        while self._next < len(self.text):
            self._emit(out, min(self._time + self._weights[self._next] * per_weight, audio_seconds))
        return out

    def _emit(self, out: Alignment, end: float) -> None:
        out.characters.append(self.text[self._next])
        out.character_start_times_seconds.append(round(self._time, 4))
        out.character_end_times_seconds.append(round(end, 4))
        self._time = end
        self._next += 1


def estimate_alignment(text: str, audio_seconds: float) -> Alignment:
    """The whole text spread over `audio_seconds` of audio."""
    return CharacterTimeline(text).finish(audio_seconds)
