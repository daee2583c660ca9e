"""Decode an uploaded audio file (any container PyAV reads) to mono float32 at one rate."""

from __future__ import annotations

import io

import av
import numpy as np


class UndecodableAudio(ValueError):
    pass


def decode_audio(data: bytes, sample_rate: int, *, max_seconds: float) -> np.ndarray:
    """Mono float32 samples at `sample_rate`; stops reading past `max_seconds` (+1 s)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = int((max_seconds + 1.0) * sample_rate)
    parts: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file has no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    total += out.samples
                if total > limit:
                    break
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except UndecodableAudio:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise UndecodableAudio(f"could not decode the audio ({exc.__class__.__name__})") from None
    if not parts:
        raise UndecodableAudio("the file contains no audio samples")
    return np.concatenate(parts).astype(np.float32, copy=False)
