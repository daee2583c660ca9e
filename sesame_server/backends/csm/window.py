"""The conversation window: what the backbone's positions hold, as pure bookkeeping.

    [voice prompt][context segment ...][sentence text][frames ...]   at most `window` positions

The voice prompt comes from a cached KV snapshot and never leaves the window. Context
segments are known by their keys, so a request whose context is a suffix of what the cache
already holds continues it instead of prefilling it again. When a sentence would not fit,
the context is re-laid: oldest segments dropped first, at most half the window kept.

Lengths and keys only (no MLX, no tokenizer): the policy is tested in milliseconds
(tests/test_csm_window.py); backend.py applies it to the real cache.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Sequence, Sized

import numpy as np

from sesame_server.audio.units import FRAME_SECONDS
from sesame_server.backends.base import BackendError

MAX_SECONDS_PER_SENTENCE = 90.0  # mlx-audio's default cap; a sentence is at most ~400 chars

# (turn id, text, speaker, codes identity): equal keys mean the same tokens in the cache.
SegmentKey = tuple


def segment_key(turn_id: str | None, text: str, speaker: int, codes: np.ndarray | None = None) -> SegmentKey:
    """A segment's identity: what was said, by whom, and exactly which audio codes."""
    return (turn_id, text, speaker, None if codes is None else (codes.shape, hash(codes.tobytes())))


def count_turns(keys: Iterable[SegmentKey], *, excluding: str | None = None) -> int:
    """Distinct turns among segment keys: a generated turn spans one segment per sentence,
    a text-only segment (no turn id) is a turn of its own. `excluding`: a turn id not counted
    (the request's own sentences once they are in the window)."""
    keys = [k for k in keys if excluding is None or k[0] != excluding]
    return len({k[0] for k in keys if k[0]}) + sum(1 for k in keys if not k[0])


def frame_budget(text_tokens: int, fixed: int | None = None, max_seconds: float = MAX_SECONDS_PER_SENTENCE) -> int:
    """Frames a sentence may take: `fixed` (tests, bench, warm-up), else from its length, at
    most `max_seconds` (MAX_SENTENCE_SECONDS)."""
    if fixed is not None:
        return max(1, int(fixed))
    # Generous: ~12 frames (~1 s) per text token, the model normally stops much earlier.
    return max(1, int(min(max_seconds / FRAME_SECONDS, 25 + 12 * text_tokens)))


def fits(offset: int, tokens: int, max_frames: int, window: int) -> bool:
    """Whether `tokens` more, then up to `max_frames` frames and the end frame, fit after `offset`."""
    return offset + tokens + max_frames + 1 <= window


@dataclass(frozen=True)
class Tail:
    """What the KV cache holds after a completed generation: the next turn may continue it."""

    voice_id: str
    keys: tuple[SegmentKey, ...]  # every segment after the voice prompt, oldest first
    user: int  # which use of the cache left it (any later use invalidates it)
    offset: int  # cache length it left (anything else touching the cache changes it)
    closing: Sized  # frames still to feed to close its last segment (only the length counts here)


class Continuation(enum.Enum):
    NONE = "none"  # no cached turn to continue (nothing to count)
    CONTINUE = "continue"  # the cache holds the context: feed `tail.closing`, then the text
    MISS = "miss"  # the request has context the cache cannot serve: prefill it


def continuation(
    tail: Tail | None, *, voice_id: str, keys: Sequence[SegmentKey], user: int, offset: int,
    window: int, first_text: int, max_frames: int,
) -> Continuation:
    """Whether this request (use `user` of the cache, context `keys`) continues `tail`.

    It does when the previous use of the cache was the last turn of this conversation in
    this voice: the request's context is then a suffix of what the cache holds (older turns
    the session has dropped may stay until the window fills), and the first sentence fits.
    """
    if (tail is None or not keys or tail.user != user - 1 or tail.voice_id != voice_id
            or tail.offset != offset):
        return Continuation.NONE
    keys = list(keys)
    if len(keys) > len(tail.keys) or list(tail.keys[len(tail.keys) - len(keys):]) != keys:
        return Continuation.MISS
    if not fits(offset, len(tail.closing) + first_text, max_frames, window):
        return Continuation.MISS  # window full: re-lay the context from the turns
    return Continuation.CONTINUE


@dataclass(frozen=True)
class Relay:
    """A re-laid window: [voice][context minus its `dropped` oldest segments][sentence]."""

    dropped: int
    max_frames: int  # what the sentence may still take (less than asked when space is short)


def relay(segments: Sequence[int], *, voice_tokens: int, text_tokens: int, max_frames: int, window: int) -> Relay:
    """Make room for a sentence: drop the oldest context segments (lengths `segments`, oldest
    first), never the voice prompt, until the sentence fits and at most half the window is
    context. Raises BackendError when the sentence cannot fit next to the voice at all."""
    kept = list(segments)
    dropped = 0

    def too_long() -> bool:
        context = sum(kept)
        # At most half the window of context: the re-lay (a full prefill) then buys room for
        # many sentences instead of recurring at every one of them.
        return context + voice_tokens + text_tokens + max_frames + 1 > window or context > window // 2

    while kept and too_long():
        kept.pop(0)
        dropped += 1
    room = window - voice_tokens - sum(kept) - text_tokens - 1
    if room < 1:
        raise BackendError(f"the sentence does not fit in CSM's {window}-token window next to the voice prompt")
    return Relay(dropped, min(max_frames, room))
