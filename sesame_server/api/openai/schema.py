"""The OpenAI speech body: validated once, turned into a dialect-free SpeechRequest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat

from sesame_server.api.errors import APIError
from sesame_server.audio.formats import OPENAI_FORMATS, OutputFormat, openai_format
from sesame_server.audio.units import MAX_SPEED, MIN_SPEED
from sesame_server.context.conversation import Caller, ContextError, plan_context
from sesame_server.context.fields import ContextFields, Name, Text
from sesame_server.engine.request import SpeechRequest
from sesame_server.runtime import Runtime
from sesame_server.spoken.policy import spoken_text
from sesame_server.voices.catalogue import VoiceNotFound, VoiceUnusable

MODEL_IDS = ("csm-1b", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MAX_INSTRUCTIONS = 4096


def _lower(value):
    return value.strip().lower() if isinstance(value, str) else value


class VoiceObject(BaseModel):
    """openai-python 3.x sends the voice as {"id": ...}."""

    model_config = ConfigDict(strict=True, extra="ignore")
    id: Name


class SpeechBody(ContextFields):
    """POST /v1/audio/speech. Unknown keys are ignored (Home Assistant, Open WebUI add their own)."""

    model_config = ConfigDict(strict=True, extra="ignore", title="OpenAI speech request")

    model: Name | None = Field(None, description="Any name; every model is served by the local one.")
    input: Text = Field(description="The text to speak (at most MAX_INPUT_LENGTH characters).")
    voice: Name | VoiceObject | None = Field(
        None, description="A local voice id or an OpenAI voice name (mapped to the closest local voice).")
    instructions: Annotated[Text, Field(max_length=MAX_INSTRUCTIONS)] | None = Field(
        None, description="Accepted; no local model takes style instructions.")
    response_format: Annotated[Literal[OPENAI_FORMATS], BeforeValidator(_lower)] | None = None  # type: ignore[valid-type]
    speed: Annotated[StrictFloat, Field(ge=MIN_SPEED, le=MAX_SPEED, allow_inf_nan=False)] | None = None
    stream_format: Literal["audio", "sse"] | None = None


@dataclass(frozen=True)
class ParsedSpeech:
    speech: SpeechRequest
    fmt: OutputFormat
    sse: bool


def parse_speech(body: SpeechBody, rt: Runtime, caller: Caller, request_id: str) -> ParsedSpeech:
    """Checks only the running server can make (length limit, voices, context), then the request."""
    text = body.input
    limit = rt.settings.max_input_length
    if len(text) > limit:
        raise APIError(400, f"Input exceeds maximum length of {limit} characters (got {len(text)}).",
                       param="input", code="input_too_long")
    if not text.strip():
        raise APIError(400, "input must contain some text to speak.", param="input", code="empty_input")
    voice = _voice(body.voice, rt)
    fmt = openai_format(body.response_format or rt.settings.default_format)
    try:
        context = plan_context(rt.turns, rt.settings, body, voice, caller, rt.metrics.observe_context_lookup,
                               rt.metrics.observe_context_cold_start)
    except ContextError as exc:
        raise APIError(400, str(exc), param=exc.param, code=exc.code) from None
    speech = SpeechRequest(  # OpenAI always normalizes (TEXT_NORMALIZATION=off turns it off)
        text=spoken_text(text, rt.settings, voice=rt.catalogue.get(voice)).text, voice=voice, request_id=request_id,
        speed=float(body.speed or 1.0), stream=True,
        reference=rt.custom_voices.reference(voice), context=context.context,
        previous_text=context.previous_text, conversation=context.conversation,
    )
    return ParsedSpeech(speech, fmt, sse=body.stream_format == "sse")


def _voice(voice: str | VoiceObject | None, rt: Runtime) -> str:
    if isinstance(voice, VoiceObject):
        voice = voice.id
    if voice is None:
        return rt.catalogue.default.id
    try:
        return rt.catalogue.resolve(voice).id
    except VoiceNotFound as exc:
        raise APIError(400, str(exc), param="voice", code="voice_not_found") from None
    except VoiceUnusable as exc:
        raise APIError(400, str(exc), param="voice", code="voice_unusable") from None
