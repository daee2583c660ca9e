"""Whether to normalize a request's text: the request's own say (ElevenLabs'
`apply_text_normalization`), else the voice's (a cloned voice's `text_normalization`
label, else VOICE_TEXT_NORMALIZATION for any voice), else the server's
TEXT_NORMALIZATION (auto means on)."""

from __future__ import annotations

from sesame_server.backends.base import Voice
from sesame_server.config import Settings
from sesame_server.spoken import Spoken, normalize, unchanged


VOICE_LABEL = "text_normalization"


def spoken_text(text: str, settings: Settings, requested: str | None = None, voice: Voice | None = None) -> Spoken:
    """`requested`: the request's on|off|auto (None or auto: the voice's, else the server's)."""
    mode = requested if requested in ("on", "off") else None
    if mode is None and voice is not None:
        label = voice.labels.get(VOICE_LABEL)
        mode = label if label in ("on", "off") else _configured(settings, voice)
    mode = mode or settings.text_normalization
    if mode == "off":
        return unchanged(text)
    return normalize(text, read_code=settings.code_blocks == "read", describe_emoji=settings.emoji == "describe")


def _configured(settings: Settings, voice: Voice) -> str | None:
    """VOICE_TEXT_NORMALIZATION's mode for a voice named by its local or ElevenLabs id."""
    names = {voice.id.lower(), voice.elevenlabs_id.lower()}
    return next((mode for name, mode in settings.voice_text_normalization if name.lower() in names), None)
