"""Whether to normalize a request's text: the request's own say (ElevenLabs'
`apply_text_normalization`), else the server's TEXT_NORMALIZATION (auto means on)."""

from __future__ import annotations

from sesame_server.config import Settings
from sesame_server.spoken import Spoken, normalize, unchanged


def spoken_text(text: str, settings: Settings, requested: str | None = None) -> Spoken:
    """`requested`: the request's on|off|auto (None or auto: the server's setting)."""
    mode = requested if requested in ("on", "off") else settings.text_normalization
    if mode == "off":
        return unchanged(text)
    return normalize(text, read_code=settings.code_blocks == "read", describe_emoji=settings.emoji == "describe")
