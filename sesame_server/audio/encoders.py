"""One encoder object per response: `write(pcm) -> bytes` as audio arrives, `finish()` once.

Each encoder produces one continuous stream (one MP3 stream, one Ogg stream, one ADTS
stream), never a file per chunk: concatenated per-chunk files click and report the wrong
duration. Input is mono float32 in [-1, 1] at the format's sample rate.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import Protocol

import av
import lameenc
import numpy as np

from sesame_server.audio.formats import OutputFormat
from sesame_server.audio.resample import as_mono_float32

# Ogg page length (microseconds). The muxer's default (1 s) holds audio back for a second,
# and it always keeps the newest complete page until the next one completes. 40 ms pages
# (two 20 ms Opus packets) put the first audio page out after the first 80 ms block at
# 24 kHz (after the second at 48 kHz, where the resampler's delay eats into block one)
# for ~6 kbit/s of page headers; 20 ms pages would cost twice that.
_OGG_PAGE_US = 40_000
_LAME_QUALITY = 2  # LAME -q 2: high quality, still far faster than real time
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # what streaming WAV servers put in RIFF/data sizes


class Encoder(Protocol):
    def write(self, pcm: np.ndarray) -> bytes: ...

    def finish(self) -> bytes: ...

    def close(self) -> None:
        """Drop the encoder without flushing (the client went away)."""


def to_s16(pcm: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, clipping instead of wrapping around."""
    samples = as_mono_float32(pcm)
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


class _Finishable:
    """Guards shared by every encoder: no writes after finish, finish is idempotent."""

    _finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"{type(self).__name__}.write() after finish()")

    def close(self) -> None:
        self._finished = True


class PcmEncoder(_Finishable):
    """Raw s16le, no header (OpenAI pcm, ElevenLabs pcm_*)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    def write(self, pcm: np.ndarray) -> bytes:
        self._check_open()
        return to_s16(pcm).tobytes()

    def finish(self) -> bytes:
        self._finished = True
        return b""


class WavEncoder(_Finishable):
    """Canonical 44-byte-header PCM s16 WAV.

    Streaming: the header goes out first with unknown (0xFFFFFFFF) sizes, as streaming
    WAV servers do; decoders then read to the end of the body. Non-streaming: the whole
    file comes from finish() with exact RIFF and data sizes.
    """

    def __init__(self, sample_rate: int, *, streaming: bool) -> None:
        self.sample_rate = sample_rate
        self.streaming = streaming
        self._header_sent = False
        self._body = bytearray()  # non-streaming only

    def header(self, data_bytes: int | None) -> bytes:
        block_align = 2  # mono s16
        if data_bytes is None:
            riff_size = data_size = _WAV_UNKNOWN_SIZE
        else:
            riff_size, data_size = 36 + data_bytes, data_bytes
        return (
            struct.pack("<4sI4s", b"RIFF", riff_size, b"WAVE")
            + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, self.sample_rate,
                          self.sample_rate * block_align, block_align, 16)
            + struct.pack("<4sI", b"data", data_size)
        )

    def write(self, pcm: np.ndarray) -> bytes:
        self._check_open()
        data = to_s16(pcm).tobytes()
        if not self.streaming:
            self._body += data
            return b""
        if not self._header_sent:
            self._header_sent = True
            return self.header(None) + data
        return data

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if self.streaming:
            return b"" if self._header_sent else self.header(None)
        return self.header(len(self._body)) + bytes(self._body)


class G711Encoder(_Finishable):
    """Raw 8-bit G.711 (ulaw -> pcm_mulaw, alaw -> pcm_alaw), no header, via PyAV."""

    def __init__(self, sample_rate: int, law: str) -> None:
        codec = {"ulaw": "pcm_mulaw", "alaw": "pcm_alaw"}[law]
        self.sample_rate = sample_rate
        self._codec = av.CodecContext.create(codec, "w")
        self._codec.sample_rate = sample_rate
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.time_base = Fraction(1, sample_rate)
        self._codec.open()
        self._pts = 0

    def write(self, pcm: np.ndarray) -> bytes:
        self._check_open()
        samples = to_s16(pcm)
        if not len(samples):
            return b""
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(samples)
        return b"".join(bytes(packet) for packet in self._codec.encode(frame))

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        return b"".join(bytes(packet) for packet in self._codec.encode(None))


class Mp3Encoder(_Finishable):
    """CBR MP3 via LAME (lameenc), mono, encoded at the format's rate (LAME never resamples).

    lameenc writes no Xing/Info header, so a streamed MP3 is plain CBR frames throughout.
    """

    def __init__(self, sample_rate: int, bitrate: int) -> None:
        self.sample_rate = sample_rate
        self._lame = lameenc.Encoder()
        self._lame.set_channels(1)
        self._lame.set_in_sample_rate(sample_rate)
        self._lame.set_out_sample_rate(sample_rate)
        self._lame.set_bit_rate(bitrate // 1000)
        self._lame.set_quality(_LAME_QUALITY)
        self._started = False  # lameenc refuses to flush an encoder that never encoded

    def write(self, pcm: np.ndarray) -> bytes:
        self._check_open()
        samples = to_s16(pcm)
        if not len(samples):
            return b""
        self._started = True
        return bytes(self._lame.encode(samples.tobytes()))

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        return bytes(self._lame.flush()) if self._started else b""


class _DrainSink:
    """Write-only, non-seekable file object for PyAV: muxers append, we take the bytes.

    Having no seek() tells FFmpeg the output is a stream, so muxers never go back to
    patch headers (which is what a chunked HTTP body needs).
    """

    def __init__(self) -> None:
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._pending)
        self._pending.clear()
        return out


class _PyAVEncoder(_Finishable):
    """One PyAV output container + audio stream for the whole response.

    The codec context rebuffers our blocks into the encoder's fixed frame size (opus 20 ms,
    aac 1024), so any block length can be written.
    """

    container_format = ""
    codec_name = ""
    sample_format = "flt"
    container_options: dict[str, str] = {}
    codec_options: dict[str, str] = {}

    def __init__(self, sample_rate: int, bitrate: int | None, *, seekable: bool = False) -> None:
        self.sample_rate = sample_rate
        # seekable only where the whole file is returned from finish() (lets the muxer
        # write exact headers); everything else drains after every write.
        self._sink: _DrainSink | io.BytesIO = io.BytesIO() if seekable else _DrainSink()
        # flush_packets: push each muxed packet through AVIO's 32 KiB buffer at once.
        options = {"flush_packets": "1", **self.container_options}
        self._box = av.open(self._sink, "w", format=self.container_format, container_options=options)
        self._stream = self._box.add_stream(
            self.codec_name, rate=sample_rate, options=dict(self.codec_options)
        )
        self._stream.layout = "mono"
        self._stream.format = self.sample_format
        if bitrate:
            self._stream.bit_rate = bitrate
        self._time_base = Fraction(1, sample_rate)
        self._pts = 0

    def _drain(self) -> bytes:
        return self._sink.take() if isinstance(self._sink, _DrainSink) else b""

    def write(self, pcm: np.ndarray) -> bytes:
        self._check_open()
        samples = as_mono_float32(pcm)
        if not len(samples):
            return b""
        clipped = np.clip(samples, -1.0, 1.0)[np.newaxis, :]
        frame = av.AudioFrame.from_ndarray(clipped, format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += len(samples)
        self._box.mux(self._stream.encode(frame))
        return self._drain()

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        self._box.mux(self._stream.encode(None))
        self._box.close()  # writes the trailer (last Ogg page, FLAC STREAMINFO when seekable)
        if isinstance(self._sink, io.BytesIO):
            return self._sink.getvalue()
        return self._drain()

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._box.close()  # frees the codec and muxer now rather than at GC


class OpusEncoder(_PyAVEncoder):
    """Ogg-Opus via libopus; libopus takes 8/12/16/24/48 kHz input natively."""

    container_format = "ogg"
    codec_name = "libopus"
    container_options = {"page_duration": str(_OGG_PAGE_US)}
    # Constrained VBR: unconstrained VBR overshoots the asked bitrate by ~25% on speech.
    codec_options = {"vbr": "constrained"}


class AacEncoder(_PyAVEncoder):
    """AAC-LC in ADTS (self-framed, so it streams) via FFmpeg's native aac encoder."""

    container_format = "adts"
    codec_name = "aac"
    sample_format = "fltp"


class FlacEncoder(_PyAVEncoder):
    """FLAC via FFmpeg. Streamed: STREAMINFO without total length (decoders don't need
    it). Non-streaming: written to a seekable buffer so STREAMINFO gets length and MD5."""

    container_format = "flac"
    codec_name = "flac"
    sample_format = "s16"

    def __init__(self, sample_rate: int, *, streaming: bool) -> None:
        super().__init__(sample_rate, None, seekable=not streaming)


def make_encoder(fmt: OutputFormat, *, streaming: bool) -> Encoder:
    """The encoder for `fmt`; `streaming` only changes wav (header sizes) and flac."""
    container = fmt.container
    if container == "mp3":
        return Mp3Encoder(fmt.sample_rate, fmt.bitrate or 128_000)
    if container == "opus":
        return OpusEncoder(fmt.sample_rate, fmt.bitrate or 48_000)
    if container == "aac":
        return AacEncoder(fmt.sample_rate, fmt.bitrate or 64_000)
    if container == "flac":
        return FlacEncoder(fmt.sample_rate, streaming=streaming)
    if container == "wav":
        return WavEncoder(fmt.sample_rate, streaming=streaming)
    if container == "pcm":
        return PcmEncoder(fmt.sample_rate)
    if container in ("ulaw", "alaw"):
        return G711Encoder(fmt.sample_rate, container)
    raise ValueError(f"no encoder for container {container!r}")
