"""Per-response audio path: speed -> resample -> encode, one block at a time.

Runs on the request thread for every generated frame, so everything heavy (codec
contexts, the resampler, the stretcher) is built once in __init__ and reused.
"""

from __future__ import annotations

import numpy as np

from sesame_server.audio.encoders import Encoder, make_encoder
from sesame_server.audio.formats import OutputFormat
from sesame_server.audio.resample import StreamingResampler, as_mono_float32
from sesame_server.audio.stretch import TimeStretcher


class AudioPipeline:
    """Turns the backend's float32 blocks into `fmt` bytes for one response.

    Pass speed=1.0 when the backend already applied the requested speed.
    """

    def __init__(self, source_rate: int, fmt: OutputFormat, *, speed: float = 1.0, streaming: bool) -> None:
        self.source_rate = int(source_rate)
        self.fmt = fmt
        self.streaming = streaming
        # TimeStretcher validates the speed range even when it ends up unused.
        stretcher = TimeStretcher(self.source_rate, speed)
        self._stretcher = None if stretcher.passthrough else stretcher
        self._resampler = StreamingResampler(self.source_rate, fmt.sample_rate)
        self._encoder: Encoder = make_encoder(fmt, streaming=streaming)
        self._samples_out = 0
        self._finished = False

    @property
    def seconds_out(self) -> float:
        """Seconds of audio handed to the encoder so far (at fmt.sample_rate)."""
        return self._samples_out / self.fmt.sample_rate

    def feed(self, block: np.ndarray) -> bytes:
        """Push one block of source audio; returns the encoded bytes ready now (maybe b"")."""
        if self._finished:
            raise RuntimeError("AudioPipeline.feed() after finish()")
        samples = as_mono_float32(block)
        if self._stretcher is not None:
            samples = self._stretcher.process(samples)
        return self._encode(self._resampler.process(samples))

    def finish(self) -> bytes:
        """Flush stretcher, resampler and encoder; the last bytes of the response."""
        if self._finished:
            return b""
        self._finished = True
        out = b""
        if self._stretcher is not None:
            out += self._encode(self._resampler.process(self._stretcher.flush()))
        out += self._encode(self._resampler.flush())
        return out + self._encoder.finish()

    def close(self) -> None:
        """Release the codec state; after finish() or instead of it for aborted responses
        (call in `finally`). Native resources go now, not whenever a traceback that still
        references this pipeline is collected."""
        if not self._finished:
            self._finished = True
            self._encoder.close()
        self._resampler = self._stretcher = None

    def _encode(self, samples: np.ndarray) -> bytes:
        if not len(samples):
            return b""
        self._samples_out += len(samples)
        return self._encoder.write(samples)
