"""Decode what the server sent back and check it like a listener would."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

# PyAV demuxer names for each container the server speaks.
_DEMUXERS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav"}


@dataclass
class Decoded:
    samples: np.ndarray  # float32 mono
    sample_rate: int
    codec: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.samples)))) if len(self.samples) else 0.0


def decode(data: bytes, container: str, sample_rate: int = 24000) -> Decoded:
    """Decode `data`; raw pcm/ulaw/alaw need the rate the server promised."""
    assert data, "empty audio body"
    if container == "pcm":
        assert len(data) % 2 == 0, "pcm body is not whole 16-bit samples"
        return Decoded(np.frombuffer(data, "<i2").astype(np.float32) / 32768, sample_rate, "pcm_s16le")
    if container in ("ulaw", "alaw"):
        codec = "pcm_mulaw" if container == "ulaw" else "pcm_alaw"
        decoder = av.CodecContext.create(codec, "r")
        decoder.sample_rate = sample_rate
        decoder.layout = "mono"
        frames = decoder.decode(av.Packet(data))
        return Decoded(_mono(frames), sample_rate, codec)
    with av.open(io.BytesIO(data), format=_DEMUXERS[container]) as box:
        stream = box.streams.audio[0]
        frames = list(box.decode(stream))
        return Decoded(_mono(frames), stream.codec_context.sample_rate, stream.codec_context.name)


def _mono(frames) -> np.ndarray:
    parts = []
    for frame in frames:
        array = frame.to_ndarray()
        if array.dtype.kind == "i":
            array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
        array = array.astype(np.float32)
        parts.append(array.reshape(-1) if frame.format.is_packed else array[0])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def assert_speech(decoded: Decoded, *, sample_rate: int, seconds: float, tolerance: float = 0.10) -> None:
    assert decoded.sample_rate == sample_rate, f"sample rate {decoded.sample_rate} != {sample_rate}"
    assert abs(decoded.seconds - seconds) <= tolerance * seconds, (
        f"duration {decoded.seconds:.3f}s is not within {tolerance:.0%} of {seconds:.3f}s")
    assert decoded.rms > 0.01, f"audio is silent (rms {decoded.rms:.5f})"


# --- MP3 frame headers (ISO 11172-3 / 13818-3), parsed by hand ------------------------

_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_headers(data: bytes) -> list[tuple[int, int, int]]:
    """(bitrate, sample_rate, channel_mode) of every frame; the frames must tile the data."""
    headers, pos = [], 0
    while pos < len(data):
        header = int.from_bytes(data[pos:pos + 4], "big")
        assert header >> 21 == 0x7FF, f"lost frame sync at byte {pos}"
        version, layer = (header >> 19) & 3, (header >> 17) & 3
        assert layer == 1, "not Layer III"
        mpeg1 = version == 3
        kbps = (_MPEG1_L3_KBPS if mpeg1 else _MPEG2_L3_KBPS)[(header >> 12) & 0xF]
        rate = _MP3_RATES[version][(header >> 10) & 3]
        padding, mode = (header >> 9) & 1, (header >> 6) & 3
        headers.append((kbps * 1000, rate, mode))
        pos += (144 if mpeg1 else 72) * kbps * 1000 // rate + padding
    assert pos == len(data), "trailing bytes after the last MP3 frame"
    return headers
