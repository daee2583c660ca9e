"""The ElevenLabs text-to-speech body and query: validated once, turned into a SpeechRequest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from sesame_server.api.errors import APIError
from sesame_server.api.validation import validate
from sesame_server.audio.formats import OutputFormat, UnsupportedFormat, elevenlabs_format
from sesame_server.audio.units import MAX_SPEED, MIN_SPEED
from sesame_server.context.conversation import Caller, ContextError, plan_context
from sesame_server.context.fields import MAX_NAME_LENGTH, ContextFields, Name, Text
from sesame_server.engine.request import SpeechRequest
from sesame_server.runtime import Runtime
from sesame_server.spoken import Spoken
from sesame_server.spoken.policy import spoken_text
from sesame_server.voices.catalogue import VoiceNotFound, VoiceUnusable

MAX_SEED = 4294967295
DEFAULT_VOICE_SETTINGS = {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": True,
                          "speed": 1.0}
# stability 0..1 → sampling temperature 1.2..0.6: steadier voice, lower temperature.
# At the default stability 0.5 this is 0.9, CSM's own default.
_TEMPERATURE_AT_ZERO_STABILITY, _TEMPERATURE_SPAN = 1.2, 0.6

Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]  # strict float takes ints too, never bools
Unit = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class VoiceSettings(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    stability: Unit | None = Field(None, description="0-1; sampling temperature 1.2 - 0.6 x stability.")
    similarity_boost: Unit | None = Field(None, description="0-1; accepted, no local model has this knob.")
    style: Unit | None = Field(None, description="0-1; accepted, no local model has this knob.")
    use_speaker_boost: StrictBool | None = None
    speed: Number | None = Field(None, description=f"Clamped to {MIN_SPEED}-{MAX_SPEED}, never rejected.")


class TextToSpeechBody(ContextFields):
    """POST /v1/text-to-speech/{voice_id}[...]. Unknown keys are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", title="ElevenLabs text-to-speech request")

    text: Text = Field(description="The text to speak (at most MAX_INPUT_LENGTH characters).")
    model_id: Name | None = Field(None, description="Any id; every model is served by the local one.")
    language_code: Name | None = None
    voice_settings: VoiceSettings | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    output_format: Name | None = Field(None, description="As in the query (ElevenLabsKit sends it here).")
    apply_text_normalization: Literal["auto", "on", "off"] | None = None
    apply_language_text_normalization: StrictBool | None = None
    pronunciation_dictionary_locators: list[Any] | None = None


class TextToSpeechQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", title="ElevenLabs text-to-speech query")

    output_format: Annotated[str, Field(max_length=MAX_NAME_LENGTH)] | None = None
    optimize_streaming_latency: Annotated[int, Field(ge=0, le=4)] | None = Field(
        None, description="Any level above 0 sends the first audio after one frame.")
    enable_logging: bool | None = None


@dataclass(frozen=True)
class ParsedSpeech:
    speech: SpeechRequest  # its text is the spoken form
    fmt: OutputFormat
    spoken: Spoken  # the text as sent, as spoken, and the mapping (timestamps of both)


def parse_speech(voice_id: str, body: TextToSpeechBody, query: Mapping[str, str], rt: Runtime, caller: Caller,
                 request_id: str, *, streaming: bool) -> ParsedSpeech:
    args = validate(TextToSpeechQuery, query, where="query")
    text = body.text
    if not text.strip():
        raise APIError(400, "text must contain some text to speak.", code="empty_text")
    limit = rt.settings.max_input_length
    if len(text) > limit:
        raise APIError(400, f"Text is {len(text)} characters; the maximum is {limit}.",
                       code="max_character_limit_exceeded")
    voice = resolve_voice(rt, voice_id)
    fmt = output_format(args.output_format or body.output_format or rt.settings.default_output_format, streaming,
                         "query" if args.output_format else "body")
    settings = voice_settings(body.voice_settings)
    try:
        context = plan_context(rt.turns, rt.settings, body, voice.id, caller, rt.metrics.observe_context_lookup,
                               rt.metrics.observe_context_cold_start)
    except ContextError as exc:
        raise APIError(422, str(exc), param=exc.param, code=exc.code) from None
    spoken = spoken_text(text, rt.settings, body.apply_text_normalization, voice)
    speech = SpeechRequest(
        text=spoken.text, voice=voice.id, request_id=request_id, speed=settings["speed"], stream=streaming,
        seed=body.seed,
        temperature=temperature(settings),
        first_chunk_frames=1 if args.optimize_streaming_latency else None,
        previous_text=context.previous_text, reference=rt.custom_voices.reference(voice.id),
        context=context.context, conversation=context.conversation,
    )
    return ParsedSpeech(speech, fmt, spoken)


def voice_settings(given: VoiceSettings | None) -> dict:
    """The defaults, overridden by what was sent; speed clamped as clients expect."""
    settings = dict(DEFAULT_VOICE_SETTINGS)
    if given is not None:
        settings.update(given.model_dump(exclude_none=True))
    settings["speed"] = min(max(float(settings["speed"]), MIN_SPEED), MAX_SPEED)
    return settings


def temperature(settings: dict) -> float:
    return _TEMPERATURE_AT_ZERO_STABILITY - _TEMPERATURE_SPAN * settings["stability"]


def resolve_voice(rt: Runtime, voice_id: str):
    """The local voice an ElevenLabs voice id names; APIError (400) in ElevenLabs' words if none."""
    try:
        return rt.catalogue.resolve_elevenlabs(voice_id)
    except VoiceNotFound:
        available = ", ".join(rt.catalogue.ids)
        raise APIError(400, f"A voice with voice_id '{voice_id}' was not found. Available voices: {available}.",
                       code="voice_not_found") from None
    except VoiceUnusable as exc:
        raise APIError(400, str(exc), code="voice_unusable") from None


def output_format(name: str, streaming: bool, where: str) -> OutputFormat:
    try:
        return elevenlabs_format(str(name), streaming=streaming)
    except UnsupportedFormat as exc:
        raise APIError(422, str(exc), param="output_format", code="enum",
                       details=[{"loc": [where, "output_format"], "msg": str(exc), "type": "enum"}]) from None
