"""The audio pipeline with real encoders, decoded back with PyAV (no mocks)."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile
import soxr

from sesame_server.audio.encoders import make_encoder
from sesame_server.audio.formats import (
    ELEVENLABS_FORMATS,
    OPENAI_FORMATS,
    OutputFormat,
    UnsupportedFormat,
    elevenlabs_format,
    openai_format,
)
from sesame_server.audio.pipeline import AudioPipeline
from sesame_server.audio.resample import StreamingResampler
from sesame_server.audio.stretch import TimeStretcher
from tests.audio_check import mp3_frame_headers

SECONDS = 1.5
BLOCK_SECONDS = 0.08  # one CSM frame
SOURCE_RATES = (22050, 24000)
DEMUXERS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav"}


def speech_like(rate: int, seconds: float = SECONDS) -> np.ndarray:
    """A few harmonics under a syllable-rate envelope; 220 Hz dominates."""
    t = np.arange(int(round(seconds * rate))) / rate
    tone = (0.5 * np.sin(2 * np.pi * 220 * t) + 0.25 * np.sin(2 * np.pi * 440 * t)
            + 0.15 * np.sin(2 * np.pi * 1250 * t) + 0.1 * np.sin(2 * np.pi * 2600 * t))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)
    return (0.5 * tone * envelope).astype(np.float32)


def blocks(signal: np.ndarray, rate: int):
    size = int(round(BLOCK_SECONDS * rate))
    for start in range(0, len(signal), size):
        yield signal[start:start + size]


def run_pipeline(fmt: OutputFormat, source_rate: int, *, streaming: bool, speed: float = 1.0,
                 signal: np.ndarray | None = None) -> tuple[bytes, list[bytes], AudioPipeline]:
    signal = speech_like(source_rate) if signal is None else signal
    pipeline = AudioPipeline(source_rate, fmt, speed=speed, streaming=streaming)
    chunks = [pipeline.feed(block) for block in blocks(signal, source_rate)]
    chunks.append(pipeline.finish())
    return b"".join(chunks), chunks, pipeline


def decode(data: bytes, container: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the decoder's sample rate."""
    with av.open(io.BytesIO(data), format=DEMUXERS[container]) as box:
        assert box.format.name == DEMUXERS[container]
        stream = box.streams.audio[0]
        assert stream.codec_context.channels == 1
        parts = []
        for frame in box.decode(stream):
            array = frame.to_ndarray().reshape(-1)
            parts.append(array / 32768.0 if array.dtype.kind == "i" else array)
        return np.concatenate(parts).astype(np.float32), stream.codec_context.sample_rate


def s16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32767.0


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


# --- G.711 reference decoders (ITU-T G.711 / Sun g711.c), independent of FFmpeg --------

def ulaw_to_linear(codes: np.ndarray) -> np.ndarray:
    u = ~codes.astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int32)


def alaw_to_linear(codes: np.ndarray) -> np.ndarray:
    a = codes.astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int32)


def opus_head(data: bytes) -> tuple[int, int]:
    """(channels, input_sample_rate) from the OpusHead packet."""
    at = data.index(b"OpusHead")
    return data[at + 9], int.from_bytes(data[at + 12:at + 16], "little")


def ogg_granules(data: bytes) -> list[int]:
    granules, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        granules.append(struct.unpack_from("<q", data, pos + 6)[0])
        segments = data[pos + 26]
        pos += 27 + segments + sum(data[pos + 27:pos + 27 + segments])
    assert pos == len(data), "chunk does not end on an Ogg page boundary"
    return granules


# --- every format, both source rates ---------------------------------------------------

ALL_FORMATS = [("openai", name) for name in OPENAI_FORMATS] + [
    ("elevenlabs", name) for name in ELEVENLABS_FORMATS
]


def resolve(dialect: str, name: str) -> OutputFormat:
    return openai_format(name) if dialect == "openai" else elevenlabs_format(name)


@pytest.mark.parametrize("source_rate", SOURCE_RATES)
@pytest.mark.parametrize(("dialect", "name"), ALL_FORMATS, ids=[f"{d}-{n}" for d, n in ALL_FORMATS])
def test_every_format_decodes_back(dialect: str, name: str, source_rate: int) -> None:
    fmt = resolve(dialect, name)
    streaming = not name.startswith("wav_")  # ElevenLabs wav only exists off the stream endpoints
    data, _chunks, pipeline = run_pipeline(fmt, source_rate, streaming=streaming)
    assert data, "empty body"
    assert pipeline.seconds_out == pytest.approx(SECONDS, abs=0.01)
    expected = int(round(SECONDS * fmt.sample_rate))  # samples at the output rate

    if fmt.container in ("pcm", "ulaw", "alaw"):
        width = 2 if fmt.container == "pcm" else 1
        assert len(data) == width * expected  # raw: exact byte count, so the rate is exact
        reference = soxr.resample(speech_like(source_rate), source_rate, fmt.sample_rate)
        if fmt.container == "pcm":
            samples = s16(data)
            assert np.max(np.abs(samples - np.clip(reference, -1, 1))) < 2 / 32767
        else:
            codes = np.frombuffer(data, np.uint8)
            linear = (ulaw_to_linear(codes) if fmt.container == "ulaw" else alaw_to_linear(codes)) / 32768.0
            noise = linear - reference
            assert 10 * np.log10(np.mean(reference**2) / np.mean(noise**2)) > 30  # G.711 gives ~38 dB
            samples = linear
        assert rms(samples) > 0.05
        return

    samples, decoded_rate = decode(data, fmt.container)
    seconds = len(samples) / decoded_rate
    assert abs(seconds - SECONDS) <= 0.10 * SECONDS, f"decoded {seconds:.3f}s"
    assert rms(samples) > 0.05, "silent"
    assert abs(dominant_hz(samples, decoded_rate) - 220) < 3

    if fmt.container == "opus":
        assert decoded_rate == 48000  # Opus always decodes at 48 kHz ...
        assert opus_head(data) == (1, fmt.sample_rate)  # ... and records the rate it was fed
        assert data.count(b"OpusHead") == 1, "one Ogg stream per response"
    else:
        assert decoded_rate == fmt.sample_rate
    if fmt.container == "mp3":
        headers = mp3_frame_headers(data)
        assert {h[0] for h in headers} == {fmt.bitrate}, "CBR at the asked bitrate"
        assert {h[1] for h in headers} == {fmt.sample_rate}
        assert {h[2] for h in headers} == {3}, "mono"
        assert b"Xing" not in data and b"Info" not in data[:1024]
    if fmt.container in ("flac", "wav"):  # lossless: the samples themselves survive
        reference = soxr.resample(speech_like(source_rate), source_rate, fmt.sample_rate)
        assert len(samples) == len(reference)
        assert np.max(np.abs(samples - reference)) < 2 / 32767


@pytest.mark.parametrize(("dialect", "name"), [
    ("openai", "opus"), ("openai", "aac"), ("elevenlabs", "opus_48000_32"), ("elevenlabs", "opus_48000_192"),
])
def test_lossy_bitrate_is_the_one_asked_for(dialect: str, name: str) -> None:
    fmt = resolve(dialect, name)
    data, _chunks, _pipeline = run_pipeline(fmt, 24000, streaming=True, signal=speech_like(24000, 3.0))
    with av.open(io.BytesIO(data), format=DEMUXERS[fmt.container]) as box:
        payload = sum(packet.size for packet in box.demux(box.streams.audio[0]))
    assert payload * 8 / 3.0 == pytest.approx(fmt.bitrate, rel=0.3)


# --- streaming behaviour -----------------------------------------------------------------

@pytest.mark.parametrize(("dialect", "name"), [("openai", "opus"), ("elevenlabs", "opus_48000_64")])
def test_ogg_opus_pages_leave_early(dialect: str, name: str) -> None:
    fmt = resolve(dialect, name)
    _data, chunks, _pipeline = run_pipeline(fmt, 24000, streaming=True)
    assert chunks[0], "headers leave with the first block"
    # Audio pages (granule > 0) within the first two 80 ms blocks, not after a second.
    early = [g for chunk in chunks[:2] for g in ogg_granules(chunk)]
    assert any(g > 0 for g in early)
    if fmt.sample_rate == 24000:  # no resampler delay: audio rides with the first block
        assert any(g > 0 for g in ogg_granules(chunks[0]))
    # Every later block keeps pages flowing (Ogg page <= 40 ms), and each chunk is whole pages.
    assert all(chunk for chunk in chunks[2:-1])


@pytest.mark.parametrize("name", ["pcm", "wav"])
def test_raw_and_wav_stream_immediately(name: str) -> None:
    _data, chunks, _pipeline = run_pipeline(openai_format(name), 24000, streaming=True)
    assert all(chunks[:-1]), "every block yields bytes at once"


@pytest.mark.parametrize("name", ["mp3_44100_128", "mp3_22050_32"])
def test_mp3_bytes_before_half_a_second(name: str) -> None:
    fmt = elevenlabs_format(name)
    pipeline = AudioPipeline(24000, fmt, streaming=True)
    fed, sent = 0.0, b""
    for block in blocks(speech_like(24000), 24000):
        sent += pipeline.feed(block)
        fed += len(block) / 24000
        if sent:
            break
    assert sent and fed < 0.5  # LAME holds back ~1 frame + its 576-sample delay, no more


def test_streaming_wav_header_has_unknown_sizes_and_parses() -> None:
    data, chunks, _pipeline = run_pipeline(openai_format("wav"), 24000, streaming=True)
    assert chunks[0][:4] == b"RIFF" and chunks[0][8:16] == b"WAVEfmt "
    riff_size, data_size = struct.unpack_from("<I", data, 4)[0], struct.unpack_from("<I", data, 40)[0]
    assert riff_size == data_size == 0xFFFFFFFF
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and len(samples) == 36000
    decoded, decoded_rate = decode(data, "wav")
    assert decoded_rate == 24000 and len(decoded) == 36000


def test_whole_wav_has_exact_sizes() -> None:
    data, chunks, _pipeline = run_pipeline(elevenlabs_format("wav_16000"), 22050, streaming=False)
    assert not any(chunks[:-1]), "a complete file only exists at the end"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert data[36:40] == b"data" and struct.unpack_from("<I", data, 40)[0] == len(data) - 44 == 2 * 24000
    info = soundfile.info(io.BytesIO(data))
    assert (info.samplerate, info.frames, info.channels) == (16000, 24000, 1)


@pytest.mark.parametrize("streaming", [True, False])
def test_flac_streams_and_whole_file_knows_its_length(streaming: bool) -> None:
    data, chunks, _pipeline = run_pipeline(openai_format("flac"), 24000, streaming=streaming)
    assert data[:4] == b"fLaC"
    total = int.from_bytes(data[8 + 10:8 + 18], "big") & ((1 << 36) - 1)  # STREAMINFO total samples
    samples, rate = decode(data, "flac")
    assert rate == 24000 and len(samples) == 36000
    if streaming:
        assert total == 0, "unknown length: the muxer never seeks back on a stream"
        assert any(chunks[:-1]), "frames leave before finish()"
    else:
        assert total == 36000
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == 24000 and len(samples) == 36000


def test_aac_is_one_adts_stream() -> None:
    data, chunks, _pipeline = run_pipeline(openai_format("aac"), 24000, streaming=True)
    assert data[:2] == b"\xff\xf1"  # ADTS sync, MPEG-4, no CRC
    assert sum(1 for chunk in chunks[:4] if chunk) >= 2, "frames leave while audio arrives"


def test_g711_matches_pyav_decoders() -> None:
    cases = (("ulaw", "pcm_mulaw", ulaw_to_linear), ("alaw", "pcm_alaw", alaw_to_linear))
    for container, codec, reference in cases:
        data, _chunks, _pipeline = run_pipeline(elevenlabs_format(f"{container}_8000"), 24000, streaming=True)
        decoder = av.CodecContext.create(codec, "r")
        decoder.sample_rate, decoder.layout = 8000, "mono"
        frames = decoder.decode(av.Packet(data))
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
        assert np.array_equal(decoded.astype(np.int32), reference(np.frombuffer(data, np.uint8)))


def test_clipping_not_wrapping() -> None:
    loud = np.full(2400, 1.7, np.float32)
    data = make_encoder(openai_format("pcm"), streaming=True).write(np.concatenate([loud, -loud]))
    values = np.frombuffer(data, "<i2")
    assert values[:2400].min() == 32767 and values[2400:].max() == -32767


# --- resampler ---------------------------------------------------------------------------

@pytest.mark.parametrize(("in_rate", "out_rate"),
                         [(24000, 44100), (22050, 24000), (24000, 8000), (24000, 48000)])
def test_resampler_has_no_seams(in_rate: int, out_rate: int) -> None:
    t = np.arange(int(in_rate * SECONDS)) / in_rate
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = StreamingResampler(in_rate, out_rate)
    streamed = np.concatenate([resampler.process(block) for block in blocks(sine, in_rate)]
                              + [resampler.flush()])
    whole = soxr.resample(sine, in_rate, out_rate)
    assert len(streamed) == len(whole) == int(SECONDS * out_rate)
    assert np.max(np.abs(streamed - whole)) < 1e-5
    # and it is the sine, not just self-consistent: compare away from the edges
    t_out = np.arange(len(streamed)) / out_rate
    middle = slice(len(t_out) // 10, -len(t_out) // 10)
    assert np.max(np.abs(streamed[middle] - 0.5 * np.sin(2 * np.pi * 440 * t_out[middle]))) < 1e-3


def test_resampler_identity_when_rates_match() -> None:
    signal = speech_like(24000)
    resampler = StreamingResampler(24000, 24000)
    assert np.array_equal(resampler.process(signal), signal)
    assert len(resampler.flush()) == 0


# --- time-stretch --------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_stretch_keeps_pitch_and_scales_duration(speed: float) -> None:
    rate = 24000
    signal = speech_like(rate, 3.0)
    stretcher = TimeStretcher(rate, speed)
    out = np.concatenate([stretcher.process(block) for block in blocks(signal, rate)] + [stretcher.flush()])
    assert len(out) == pytest.approx(len(signal) / speed, rel=0.02)
    middle = out[len(out) // 8: -len(out) // 8]
    assert dominant_hz(middle, rate) == pytest.approx(220, abs=3)
    assert rms(middle) == pytest.approx(rms(signal), rel=0.25)


def test_stretch_is_smooth_across_window_splices() -> None:
    """Streamed stretch of a steady tone has no level dips at the splices."""
    rate = 24000
    t = np.arange(rate * 3) / rate
    tone = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.15 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)
    stretcher = TimeStretcher(rate, 1.5)
    out = np.concatenate([stretcher.process(block) for block in blocks(tone, rate)] + [stretcher.flush()])
    window = rate // 50  # 20 ms = 4 periods of 200 Hz: flat for a clean tone
    levels = np.sqrt(np.mean(out[: len(out) // window * window].reshape(-1, window) ** 2, axis=1))[5:-5]
    assert levels.min() > 0.85 * np.median(levels) and levels.max() < 1.15 * np.median(levels)


def test_speed_one_is_passthrough_and_range_is_checked() -> None:
    signal = speech_like(24000)
    stretcher = TimeStretcher(24000, 1.0)
    assert stretcher.passthrough and np.array_equal(stretcher.process(signal), signal)
    for bad in (0.2, 4.5):
        with pytest.raises(ValueError):
            TimeStretcher(24000, bad)


@pytest.mark.parametrize("speed", [0.25, 2.0, 4.0])
def test_pipeline_applies_speed(speed: float) -> None:
    fmt = openai_format("mp3")
    data, _chunks, pipeline = run_pipeline(fmt, 22050, streaming=True, speed=speed)
    samples, rate = decode(data, "mp3")
    assert pipeline.seconds_out == pytest.approx(SECONDS / speed, rel=0.02)
    assert len(samples) / rate == pytest.approx(SECONDS / speed, abs=0.08)  # + LAME delay/padding
    assert dominant_hz(samples, rate) == pytest.approx(220, abs=3)


# --- format names ----------------------------------------------------------------------------

def test_openai_formats() -> None:
    assert OPENAI_FORMATS == ("mp3", "opus", "aac", "flac", "wav", "pcm")
    mp3 = openai_format("mp3")
    assert (mp3.container, mp3.sample_rate, mp3.bitrate, mp3.content_type, mp3.name) == (
        "mp3", 24000, 160000, "audio/mpeg", "mp3")
    types = {name: openai_format(name).content_type for name in OPENAI_FORMATS}
    assert types == {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                     "wav": "audio/wav", "pcm": "audio/pcm"}
    assert all(openai_format(name).sample_rate == 24000 for name in OPENAI_FORMATS)


@pytest.mark.parametrize(("name", "expected"), [
    ("mp3_44100_128", ("mp3", 44100, 128000, "audio/mpeg")),
    ("mp3_44100", ("mp3", 44100, 128000, "audio/mpeg")),
    ("mp3_22050_32", ("mp3", 22050, 32000, "audio/mpeg")),
    ("pcm_16000", ("pcm", 16000, None, "audio/pcm")),
    ("ulaw_8000", ("ulaw", 8000, None, "audio/basic")),
    ("alaw_8000", ("alaw", 8000, None, "audio/x-alaw-basic")),
    ("opus_48000_96", ("opus", 48000, 96000, "audio/ogg")),
    ("wav_44100", ("wav", 44100, None, "audio/wav")),
])
def test_elevenlabs_formats(name: str, expected: tuple) -> None:
    fmt = elevenlabs_format(name)
    assert (fmt.container, fmt.sample_rate, fmt.bitrate, fmt.content_type) == expected
    assert fmt.name == name


def test_elevenlabs_format_list() -> None:
    assert len(ELEVENLABS_FORMATS) == 2 + 5 + 1 + 7 + 2 + 5 + 7
    assert {"mp3_24000_48", "pcm_48000", "opus_48000_192", "wav_8000"} <= set(ELEVENLABS_FORMATS)


@pytest.mark.parametrize(("resolver", "bad"), [
    (openai_format, "ogg"), (openai_format, "mp3_44100_128"), (elevenlabs_format, "mp3"),
    (elevenlabs_format, "mp3_44100_320"), (elevenlabs_format, "pcm_11025"), (elevenlabs_format, ""),
])
def test_unsupported_names_list_the_accepted_ones(resolver, bad: str) -> None:
    accepted = OPENAI_FORMATS if resolver is openai_format else ELEVENLABS_FORMATS
    with pytest.raises(UnsupportedFormat) as caught:
        resolver(bad)
    assert isinstance(caught.value, ValueError)
    assert all(name in str(caught.value) for name in accepted)
    assert caught.value.accepted == accepted


def test_wav_refused_on_streaming_endpoints() -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        elevenlabs_format("wav_24000", streaming=True)
    message = str(caught.value)
    assert "stream" in message and "pcm_24000" in message and "wav_" not in message.split("accepted:")[1]
    assert elevenlabs_format("pcm_24000", streaming=True).container == "pcm"


def test_finish_is_final() -> None:
    pipeline = AudioPipeline(24000, openai_format("mp3"), streaming=True)
    pipeline.feed(speech_like(24000)[:1920])
    assert pipeline.finish()
    assert pipeline.finish() == b""
    with pytest.raises(RuntimeError):
        pipeline.feed(speech_like(24000)[:1920])


@pytest.mark.parametrize("name", OPENAI_FORMATS)
def test_close_drops_an_unfinished_response(name: str) -> None:
    pipeline = AudioPipeline(24000, openai_format(name), streaming=True)
    pipeline.feed(speech_like(24000)[:1920])
    pipeline.close()
    pipeline.close()
    assert pipeline.finish() == b""
