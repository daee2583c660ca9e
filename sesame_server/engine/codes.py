"""Mimi codes that come from outside the model: checked before a backend indexes a table with them.

Conversation memory read back from TURN_STORE and a cloned voice's codes cached in a shared
VOICES_DIR are other processes' writing. A code past Mimi's bins indexes past the model's
embedding tables (garbage audio at best, a segfault of the whole node at worst), and an
array of the wrong shape fails every request that carries it. One check for every place
that reads codes back: what any model's codes must be (the store cannot know the model),
and, where the model is known, exactly its codebooks and bins.
"""

from __future__ import annotations

import numpy as np

MAX_CODEBOOKS = 64  # Mimi has 32; CSM reads at most that many
MAX_FRAMES = 4096  # one segment; more than CSM's whole window (2048 positions) could ever hold
MAX_CODE = 1 << 16  # when the model is unknown: Mimi's codebooks have 2048 entries


class InvalidCodes(ValueError):
    """Codes no model (or not this model) can read; the message says why."""


def checked_codes(codes: object, *, codebooks: int | None = None, bins: int | None = None,
                  min_frames: int = 0) -> np.ndarray:
    """`codes` as an integer array [codebooks, frames] any model can read, or exactly this
    model when `codebooks` and `bins` are given; raises InvalidCodes otherwise."""
    if not isinstance(codes, np.ndarray):
        raise InvalidCodes(f"codes must be an array, not {type(codes).__name__}")
    if codes.dtype.kind not in "iu":
        raise InvalidCodes(f"codes of dtype {codes.dtype} (integers only)")
    if codes.ndim != 2:
        raise InvalidCodes(f"codes of shape {list(codes.shape)} (codebooks, frames)")
    rows, frames = codes.shape
    readable = rows == codebooks if codebooks is not None else 1 <= rows <= MAX_CODEBOOKS
    if not readable:
        raise InvalidCodes(f"{rows} codebooks (the model reads {codebooks or f'1 to {MAX_CODEBOOKS}'})")
    if not min_frames <= frames <= MAX_FRAMES:
        raise InvalidCodes(f"{frames} frames ({min_frames} to {MAX_FRAMES})")
    limit = MAX_CODE if bins is None else bins
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= limit):
        raise InvalidCodes(f"codes from {int(codes.min())} to {int(codes.max())} (0 to {limit - 1})")
    return codes
