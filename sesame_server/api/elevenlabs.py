"""The ElevenLabs dialect, text to speech: /v1/text-to-speech/{voice_id}[/stream][/with-timestamps]."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Iterator

from flask import Blueprint, Response, jsonify, request

from sesame_server.api.errors import APIError, elevenlabs_error
from sesame_server.api.streaming import context_headers, encoded_chunks, pipeline_for, speech_context, start_job
from sesame_server.audio.formats import OutputFormat, UnsupportedFormat, elevenlabs_format
from sesame_server.engine.alignment import CharacterTimeline, estimate_alignment
from sesame_server.engine.job import Job
from sesame_server.engine.request import SpeechRequest
from sesame_server.engine.text import split_sentences
from sesame_server.logs import note_request
from sesame_server.runtime import Runtime, request_id, runtime
from sesame_server.voices.catalogue import VoiceNotFound

bp = Blueprint("elevenlabs_tts", __name__, url_prefix="/v1/text-to-speech")
bp.register_error_handler(APIError, elevenlabs_error)

DEFAULT_VOICE_SETTINGS = {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": True,
                          "speed": 1.0}
MAX_SEED = 4294967295
# stability 0..1 → sampling temperature 1.2..0.6: steadier voice, lower temperature.
# At the default stability 0.5 this is 0.9, CSM's own default.
_TEMPERATURE_AT_ZERO_STABILITY, _TEMPERATURE_SPAN = 1.2, 0.6


@dataclass(frozen=True)
class ParsedSpeech:
    speech: SpeechRequest
    fmt: OutputFormat
    settings: dict


@bp.post("/<voice_id>")
def convert(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=False)
    rt = runtime()
    job, blocks = start_job(rt.engine, parsed.speech)
    audio = b"".join(encoded_chunks(job, blocks, pipeline_for(rt.engine, parsed.fmt, parsed.speech.speed,
                                                              streaming=False), 1 << 30))
    return _audio_response(audio, parsed, job)


@bp.post("/<voice_id>/stream")
def stream(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=True)
    rt = runtime()
    job, blocks = start_job(rt.engine, parsed.speech)
    pipeline = pipeline_for(rt.engine, parsed.fmt, parsed.speech.speed, streaming=True)
    return _audio_response(encoded_chunks(job, blocks, pipeline, rt.settings.stream_chunk_size), parsed, job)


@bp.post("/<voice_id>/with-timestamps")
def convert_with_timestamps(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=False)
    rt = runtime()
    job, blocks = start_job(rt.engine, parsed.speech)
    pipeline = pipeline_for(rt.engine, parsed.fmt, parsed.speech.speed, streaming=False)
    audio = b"".join(encoded_chunks(job, blocks, pipeline, 1 << 30))
    alignment = estimate_alignment(parsed.speech.text, pipeline.seconds_out).as_dict()
    body = {"audio_base64": base64.b64encode(audio).decode("ascii"), "alignment": alignment,
            "normalized_alignment": alignment}
    return _with_headers(jsonify(body), parsed, job)


@bp.post("/<voice_id>/stream/with-timestamps")
def stream_with_timestamps(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=True)
    rt = runtime()
    job, blocks = start_job(rt.engine, parsed.speech)
    pipeline = pipeline_for(rt.engine, parsed.fmt, parsed.speech.speed, streaming=True)
    chunks = encoded_chunks(job, blocks, pipeline, rt.settings.stream_chunk_size)
    timeline = CharacterTimeline(parsed.speech.text, parsed.speech.speed)

    def lines() -> Iterator[bytes]:
        # NDJSON, one compact object per line; each carries the characters its audio covers.
        try:
            for chunk in chunks:
                yield _ndjson_line(chunk, timeline.advance(pipeline.seconds_out).as_dict())
            rest = timeline.finish(pipeline.seconds_out)
            if rest:
                yield _ndjson_line(b"", rest.as_dict())
        finally:
            chunks.close()

    return _with_headers(Response(lines(), content_type="application/x-ndjson"), parsed, job)


def _ndjson_line(audio: bytes, alignment: dict) -> bytes:
    aligned = alignment if alignment["characters"] else None
    line = {"audio_base64": base64.b64encode(audio).decode("ascii"), "alignment": aligned,
            "normalized_alignment": aligned}
    return (json.dumps(line, separators=(",", ":")) + "\n").encode()


def _audio_response(audio, parsed: ParsedSpeech, job: Job) -> Response:
    return _with_headers(Response(audio, content_type=parsed.fmt.content_type), parsed, job)


def _with_headers(response: Response, parsed: ParsedSpeech, job: Job) -> Response:
    response.headers.update(context_headers(job))
    characters = str(len(parsed.speech.text))
    response.headers["character-cost"] = characters
    response.headers["x-character-count"] = characters
    response.headers["history-item-id"] = parsed.speech.request_id
    return response


# -- parsing ------------------------------------------------------------------------------

def _parse(voice_id: str, *, streaming: bool) -> ParsedSpeech:
    rt = runtime()
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise APIError(422, "The request body must be a JSON object with a 'text' field.", param="body",
                       code="json_invalid")
    text = body.get("text")
    if not isinstance(text, str):
        raise APIError(422, "Field required: 'text' (a string).", param="text",
                       code="missing" if text is None else "string_type")
    if not text.strip():
        raise APIError(400, "text must contain some text to speak.", code="empty_text")
    if len(text) > rt.settings.max_input_length:
        raise APIError(400, f"Text is {len(text)} characters; the maximum is {rt.settings.max_input_length}.",
                       code="max_character_limit_exceeded")
    voice = _voice(rt, voice_id)
    fmt = _output_format(rt, body, streaming)
    settings = _voice_settings(body.get("voice_settings"))
    seed = _seed(body.get("seed"))
    latency = _optimize_streaming_latency()
    context = speech_context(body, voice.id, invalid_status=422)
    speech = SpeechRequest(
        text=text,
        sentences=tuple(split_sentences(text)),
        voice=voice.id,
        request_id=request_id(),
        speed=settings["speed"],
        stream=streaming,
        seed=seed,
        temperature=_TEMPERATURE_AT_ZERO_STABILITY - _TEMPERATURE_SPAN * settings["stability"],
        first_chunk_frames=1 if latency else None,
        previous_text=context.previous_text,
        next_text=body.get("next_text") or None,
        voice_prompt=rt.custom_voices.prompt(voice.id),
        dialect="elevenlabs",
        context=context.context,
        conversation=context.conversation,
    )
    note_request(format=fmt.name, streamed=streaming)
    return ParsedSpeech(speech=speech, fmt=fmt, settings=settings)


def _voice(rt: Runtime, voice_id: str):
    try:
        return rt.catalogue.resolve_elevenlabs(voice_id)
    except VoiceNotFound:
        available = ", ".join(rt.catalogue.ids)
        raise APIError(400, f"A voice with voice_id '{voice_id}' was not found. Available voices: {available}.",
                       code="voice_not_found") from None


def _output_format(rt: Runtime, body: dict, streaming: bool) -> OutputFormat:
    # ElevenLabsKit sends output_format in the body; the SDKs in the query.
    name = request.args.get("output_format") or body.get("output_format") or rt.settings.default_output_format
    try:
        return elevenlabs_format(str(name), streaming=streaming)
    except UnsupportedFormat as exc:
        raise APIError(422, str(exc), param="output_format", code="enum") from None


def _voice_settings(raw) -> dict:
    settings = dict(DEFAULT_VOICE_SETTINGS)
    if raw is None:
        return settings
    if not isinstance(raw, dict):
        raise APIError(422, "voice_settings must be an object.", param="voice_settings", code="dict_type")
    for key in ("stability", "similarity_boost", "style", "speed"):
        value = raw.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise APIError(422, f"voice_settings.{key} must be a number.", param=f"voice_settings.{key}",
                           code="float_type")
        settings[key] = float(value)
    for key in ("stability", "similarity_boost", "style"):
        if not 0.0 <= settings[key] <= 1.0:
            raise APIError(422, f"voice_settings.{key} must be between 0 and 1.", param=f"voice_settings.{key}",
                           code="value_error")
    settings["speed"] = min(max(settings["speed"], 0.25), 4.0)  # clamp, as clients expect, never reject
    if raw.get("use_speaker_boost") is not None:
        settings["use_speaker_boost"] = bool(raw["use_speaker_boost"])
    return settings


def _seed(raw) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_SEED:
        raise APIError(422, f"seed must be an integer between 0 and {MAX_SEED}.", param="seed", code="int_type")
    return raw


def _optimize_streaming_latency() -> int:
    raw = request.args.get("optimize_streaming_latency")
    if raw is None:
        return 0
    try:
        level = int(raw)
    except ValueError:
        raise APIError(422, "optimize_streaming_latency must be an integer 0-4.", param="optimize_streaming_latency",
                       code="int_parsing") from None
    if not 0 <= level <= 4:
        raise APIError(422, "optimize_streaming_latency must be between 0 and 4.", param="optimize_streaming_latency",
                       code="value_error")
    return level
