"""Wire names of the output formats (OpenAI `response_format`, ElevenLabs `output_format`).

Each name becomes one frozen `OutputFormat` that says exactly what the encoder must
produce; the blueprints resolve it before the response starts, so a bad name is a 4xx,
not a broken stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from sesame_server.audio.units import SAMPLE_RATE  # every OpenAI format is 24 kHz mono


@dataclass(frozen=True)
class OutputFormat:
    container: str  # "mp3"|"opus"|"aac"|"flac"|"wav"|"pcm"|"ulaw"|"alaw"
    sample_rate: int  # rate of the encoded audio
    bitrate: int | None  # bits per second for lossy formats (mp3/opus/aac), else None
    content_type: str
    name: str  # the wire name it was parsed from, e.g. "mp3_44100_128" or "mp3"


class UnsupportedFormat(ValueError):
    """An output format name we do not serve; the message lists the accepted values."""

    def __init__(self, message: str, *, name: str = "", accepted: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.accepted = accepted


CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg-Opus, what OpenAI and ElevenLabs send
    "aac": "audio/aac",  # ADTS
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "ulaw": "audio/basic",
    "alaw": "audio/x-alaw-basic",
}


# container -> bitrate. mp3 160k is what OpenAI serves; opus 48k is clean for 24 kHz
# speech; aac 64k is transparent-ish for 24 kHz mono AAC-LC.
_OPENAI_BITRATES: dict[str, int | None] = {
    "mp3": 160_000,
    "opus": 48_000,
    "aac": 64_000,
    "flac": None,
    "wav": None,
    "pcm": None,
}

OPENAI_FORMATS: tuple[str, ...] = tuple(_OPENAI_BITRATES)

_PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_KBPS = (32, 64, 96, 128, 192)


def _elevenlabs_table() -> dict[str, tuple[str, int, int | None]]:
    """name -> (container, sample_rate, bitrate); order is the order we list them in."""
    table: dict[str, tuple[str, int, int | None]] = {
        "mp3_22050_32": ("mp3", 22050, 32_000),
        "mp3_24000_48": ("mp3", 24000, 48_000),
    }
    for kbps in _KBPS:
        table[f"mp3_44100_{kbps}"] = ("mp3", 44100, kbps * 1000)
    table["mp3_44100"] = ("mp3", 44100, 128_000)  # seen in the wild (LiveKit, OpenClaw)
    for rate in _PCM_RATES:
        table[f"pcm_{rate}"] = ("pcm", rate, None)
    table["ulaw_8000"] = ("ulaw", 8000, None)
    table["alaw_8000"] = ("alaw", 8000, None)
    for kbps in _KBPS:
        table[f"opus_48000_{kbps}"] = ("opus", 48000, kbps * 1000)
    for rate in _PCM_RATES:
        table[f"wav_{rate}"] = ("wav", rate, None)
    return table


_ELEVENLABS = _elevenlabs_table()
ELEVENLABS_FORMATS: tuple[str, ...] = tuple(_ELEVENLABS)
# wav needs the whole body before its header is right, so ElevenLabs refuses it on /stream.
ELEVENLABS_STREAM_FORMATS: tuple[str, ...] = tuple(n for n in ELEVENLABS_FORMATS if not n.startswith("wav_"))


def _normalize(name: str) -> str:
    return name.strip().lower() if isinstance(name, str) else ""


def openai_format(name: str) -> OutputFormat:
    """Resolve an OpenAI `response_format` (mp3 opus aac flac wav pcm)."""
    key = _normalize(name)
    if key not in _OPENAI_BITRATES:
        raise UnsupportedFormat(
            f"Unsupported response_format {name!r}; accepted: {', '.join(OPENAI_FORMATS)}",
            name=str(name),
            accepted=OPENAI_FORMATS,
        )
    return OutputFormat(key, SAMPLE_RATE, _OPENAI_BITRATES[key], CONTENT_TYPES[key], key)


def elevenlabs_format(name: str, *, streaming: bool = False) -> OutputFormat:
    """Resolve an ElevenLabs `output_format`; wav_* is refused when `streaming`."""
    key = _normalize(name)
    accepted = ELEVENLABS_STREAM_FORMATS if streaming else ELEVENLABS_FORMATS
    if key not in accepted:
        reason = " (wav is not available on streaming endpoints)" if key in _ELEVENLABS else ""
        raise UnsupportedFormat(
            f"Unsupported output_format {name!r}{reason}; accepted: {', '.join(accepted)}",
            name=str(name),
            accepted=accepted,
        )
    container, rate, bitrate = _ELEVENLABS[key]
    return OutputFormat(container, rate, bitrate, CONTENT_TYPES[container], key)
