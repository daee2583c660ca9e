"""Whether to normalize a request's text: the request's own say (ElevenLabs'
`apply_text_normalization`), else the voice's (a cloned voice's `text_normalization`
label), else the server's TEXT_NORMALIZATION (auto means on)."""

from __future__ import annotations

from sesame_server.backends.base import Voice
from sesame_server.config import Settings
from sesame_server.spoken import Spoken, normalize, unchanged


VOICE_LABEL = "text_normalization"


def spoken_text(text: str, settings: Settings, requested: str | None = None, voice: Voice | None = None) -> Spoken:
    """`requested`: the request's on|off|auto (None or auto: the voice's, else the server's)."""
    mode = requested if requested in ("on", "off") else None
    if mode is None and voice is not None and voice.labels.get(VOICE_LABEL) in ("on", "off"):
        mode = voice.labels[VOICE_LABEL]
    mode = mode or settings.text_normalization
    if mode == "off":
        return unchanged(text)
    return normalize(text, read_code=settings.code_blocks == "read", describe_emoji=settings.emoji == "describe")
