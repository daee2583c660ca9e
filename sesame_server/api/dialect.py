"""Which API dialect a request speaks: decided once per request, kept in flask.g.

Routes belong to a dialect's blueprint, so the blueprint decides; `/v1/models` serves both
SDKs and decides by headers. Only the standalone server's answer to a request no route
matched guesses from the path.
"""

from __future__ import annotations

from typing import Mapping

from flask import Response, g, request

from sesame_server.api.errors import APIError

OPENAI, ELEVENLABS, SYSTEM = "openai", "elevenlabs", "system"
_G_KEY = "sesame_dialect"
# Innermost blueprint name -> dialect; None: decided by the client's headers.
_BY_BLUEPRINT: dict[str, str | None] = {
    "openai": OPENAI,
    "elevenlabs_tts": ELEVENLABS,
    "elevenlabs_stream_input": ELEVENLABS,
    "elevenlabs_dialogue": ELEVENLABS,
    "elevenlabs_voices": ELEVENLABS,
    "elevenlabs_account": ELEVENLABS,
    "models": None,
    "ops": SYSTEM,
    "docs": SYSTEM,
    "spoken": SYSTEM,
}
_ELEVENLABS_PATHS = ("/v1/text-to-speech", "/v1/text-to-dialogue", "/v1/voices", "/v2/voices", "/v1/user")


def is_elevenlabs_client(headers: Mapping[str, str]) -> bool:
    """ElevenLabs SDKs and clients mark themselves; OpenAI's never send these."""
    agent = headers.get("User-Agent", "").lower()
    return ("xi-api-key" in headers or headers.get("X-Fern-SDK-Name", "").lower().startswith("elevenlabs")
            or "elevenlabs" in agent)


def decide() -> str:
    """Set this request's dialect from the blueprint that serves it (call once, first thing)."""
    name = (request.blueprint or "").rsplit(".", 1)[-1]
    dialect = _BY_BLUEPRINT.get(name, OPENAI)
    if dialect is None:
        dialect = ELEVENLABS if is_elevenlabs_client(request.headers) else OPENAI
    setattr(g, _G_KEY, dialect)
    return dialect


def current() -> str:
    """This request's dialect; for a request no route matched, a guess from its path."""
    dialect = g.get(_G_KEY)
    if dialect is None:
        if request.path.rstrip("/") == "/v1/models":  # both SDKs' path: the client says which
            return ELEVENLABS if is_elevenlabs_client(request.headers) else OPENAI
        dialect = ELEVENLABS if request.path.startswith(_ELEVENLABS_PATHS) else OPENAI
    return dialect


def error_response(error: APIError) -> Response:
    """`error` in this request's dialect."""
    from sesame_server.api.elevenlabs import wire as elevenlabs_wire
    from sesame_server.api.openai import wire as openai_wire

    wire = elevenlabs_wire if current() == ELEVENLABS else openai_wire
    return wire.error_response(error)
