"""The first audio block of a stream: `first_frames` frames held back, then frame by frame.

A client's player may want a little audio in hand before it starts (STREAM_BUFFER_FRAMES,
or a request's first_chunk_frames); after that each 80 ms frame goes out as soon as it is
decoded.
"""

from __future__ import annotations

import numpy as np


class Chunker:
    def __init__(self, first_frames: int | None):
        self.first_frames = max(1, int(first_frames or 1))
        self.held: list[np.ndarray] = []
        self.emitted = 0

    def push(self, pcm: np.ndarray) -> np.ndarray | None:
        """One frame's PCM in; a block to send out, or None while the first one fills."""
        if self.emitted == 0 and len(self.held) + 1 < self.first_frames:
            self.held.append(pcm)
            return None
        if self.held:
            pcm = np.concatenate([*self.held, pcm])
            self.held = []
        self.emitted += 1
        return pcm

    def flush(self) -> np.ndarray | None:
        """What is still held when the speech ended early (shorter than the first block)."""
        held, self.held = self.held, []
        return np.concatenate(held) if held else None
