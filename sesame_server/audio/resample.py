"""Streaming sample-rate conversion (soxr), one instance per response."""

from __future__ import annotations

import numpy as np
import soxr

_EMPTY = np.zeros(0, np.float32)


def as_mono_float32(block: np.ndarray) -> np.ndarray:
    """A contiguous 1-D float32 view/copy of a mono block (accepts (n,), (1, n), (n, 1))."""
    return np.ascontiguousarray(np.asarray(block, dtype=np.float32).reshape(-1))


class StreamingResampler:
    """Resample a block stream; state is carried across blocks, so there is no seam.

    soxr's ResampleStream keeps its filter history between calls, which makes block-wise
    output identical to resampling the whole signal in one go.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._stream = (
            None
            if self.in_rate == self.out_rate
            else soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")
        )
        self._flushed = False

    def process(self, block: np.ndarray) -> np.ndarray:
        samples = as_mono_float32(block)
        if self._stream is None:
            return samples
        if self._flushed:
            raise RuntimeError("StreamingResampler.process() after flush()")
        if not len(samples):
            return _EMPTY
        return self._stream.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """The filter's tail; call once at the end of the stream."""
        if self._stream is None or self._flushed:
            return _EMPTY
        self._flushed = True
        return self._stream.resample_chunk(_EMPTY, last=True)
