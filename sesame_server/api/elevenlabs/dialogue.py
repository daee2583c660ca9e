"""ElevenLabs text to dialogue: POST /v1/text-to-dialogue[/stream] (body `inputs: [{text,
voice_id}]`, `settings`, `seed`; query `output_format`).

The lines are spoken in order as one conversation: each line is a job in the engine queue,
in its own voice, conditioned (with CSM) on the lines before it, the current speaker as
speaker 0 and the other voices as speaker 1 (conversation memory's rule); Piper speaks
them in order, each in its mapped voice. One encoder runs over the whole dialogue, so the
answer is one file or stream. X-Context-Turns: per line, comma-separated (buffered), the
first line's (streamed: the headers leave before the other lines exist).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Iterator, Literal

from flask import Blueprint, Response, request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from sesame_server.api.callers import caller
from sesame_server.api.elevenlabs.schema import (
    MAX_SEED,
    TextToSpeechQuery,
    Unit,
    output_format,
    resolve_voice,
    temperature,
    voice_settings,
)
from sesame_server.api.elevenlabs.stream_input import record_piece
from sesame_server.api.errors import APIError
from sesame_server.api.serving import StreamAborted
from sesame_server.api.validation import json_body, validate
from sesame_server.context.conversation import Caller
from sesame_server.context.fields import Name, Text
from sesame_server.realtime.speaker import Speaker, SpeakFailed, Voicing
from sesame_server.runtime import request_id, runtime

bp = Blueprint("elevenlabs_dialogue", __name__, url_prefix="/v1/text-to-dialogue")

MAX_LINES = 100
ROUTE = "/v1/text-to-dialogue"


class DialogueInput(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    text: Text = Field(description="What this line says.")
    voice_id: Name = Field(description="Who says it (any voice id /v1/voices lists).")


class DialogueSettings(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    stability: Unit | None = Field(None, description="0-1; sampling temperature 1.2 - 0.6 x stability.")
    use_speaker_boost: StrictBool | None = None


class TextToDialogueBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", title="ElevenLabs text-to-dialogue request")

    inputs: Annotated[list[DialogueInput], Field(min_length=1, max_length=MAX_LINES)]
    model_id: Name | None = Field(None, description="Any id; every model is served by the local one.")
    settings: DialogueSettings | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    language_code: Name | None = None
    apply_text_normalization: Literal["auto", "on", "off"] | None = None
    pronunciation_dictionary_locators: list[Any] | None = None


@bp.post("")
def convert() -> Response:
    speaker, lines, fmt = _parse(streaming=False)
    chunks = _audio(speaker, lines)
    try:
        audio = b"".join(chunks)
    except SpeakFailed as exc:
        raise _api_error(exc) from None
    response = Response(audio, content_type=fmt.content_type)
    response.headers["X-Context-Turns"] = ",".join(str(turns) for turns in speaker.context_turns)
    return _with_headers(response, lines)


@bp.post("/stream")
def stream() -> Response:
    speaker, lines, fmt = _parse(streaming=True)
    chunks = _audio(speaker, lines)
    try:
        first = next(chunks)  # the first line's first audio, before any header: a failure is still an error
    except SpeakFailed as exc:
        chunks.close()
        raise _api_error(exc) from None
    except StopIteration:
        first = b""
    response = Response(_streamed(first, chunks), content_type=fmt.content_type)
    response.headers["X-Context-Turns"] = str(speaker.context_turns[0] if speaker.context_turns else 0)
    return _with_headers(response, lines)


def _parse(*, streaming: bool) -> tuple[Speaker, list[tuple[str, Voicing]], Any]:
    rt = runtime()
    body = validate(TextToDialogueBody, json_body(422))
    args = validate(TextToSpeechQuery, request.args, where="query")
    fmt = output_format(args.output_format or rt.settings.default_output_format, streaming, "query")
    total = sum(len(line.text) for line in body.inputs)
    if total > rt.settings.max_input_length:
        raise APIError(400, f"The dialogue is {total} characters; the maximum is {rt.settings.max_input_length}.",
                       code="max_character_limit_exceeded")
    for index, line in enumerate(body.inputs):
        if not line.text.strip():
            raise APIError(400, f"inputs[{index}].text must contain some text to speak.", code="empty_text",
                           param=f"inputs[{index}].text")
    settings = voice_settings(None)
    if body.settings is not None and body.settings.stability is not None:
        settings["stability"] = body.settings.stability
    who = caller()
    base = Voicing(voice="", fmt=fmt, caller=Caller(f"dialogue:{request_id()}", who.api_key, who.address),
                   temperature=temperature(settings), seed=body.seed, normalization=body.apply_text_normalization)
    lines = []
    for line in body.inputs:
        voice = resolve_voice(rt, line.voice_id)
        lines.append((line.text, replace(base, voice=voice.id, reference=rt.custom_voices.reference(voice.id))))
    speaker = Speaker(rt, lines[0][1], lambda job: record_piece(rt, job, ROUTE, "LINE", fmt=fmt.name))
    return speaker, lines, fmt


def _audio(speaker: Speaker, lines: list[tuple[str, Voicing]]) -> Iterator[bytes]:
    """Every line's audio through the one encoder; raises SpeakFailed."""
    try:
        for text, voicing in lines:
            for chunk in speaker.speak(text, voicing):
                if chunk.audio:
                    yield chunk.audio
        tail = speaker.finish()
        if tail:
            yield tail
    finally:
        speaker.close()  # a client gone mid-dialogue stops the line being generated


def _streamed(first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    try:
        if first:
            yield first
        yield from chunks
    except SpeakFailed as exc:
        raise StreamAborted(str(exc)) from None  # the connection is cut: a truncated body
    finally:
        chunks.close()


def _api_error(exc: SpeakFailed) -> APIError:
    status = {"too_many_concurrent_requests": 429, "voice_unusable": 400, "system_busy": 503,
              "model_unavailable": 503}.get(exc.code, 500)
    return APIError(status, str(exc), code=exc.code)


def _with_headers(response: Response, lines: list[tuple[str, Voicing]]) -> Response:
    characters = str(sum(len(text) for text, _ in lines))
    response.headers["character-cost"] = characters
    response.headers["x-character-count"] = characters
    return response
