"""The OpenAI dialect: POST /v1/audio/speech and the voice/model lists clients probe."""

from __future__ import annotations

import math

from flask import Blueprint, Response, jsonify, request

from sesame_server.api.errors import APIError, openai_error
from sesame_server.api.streaming import (context_headers, encoded_chunks, pipeline_for, speech_context, sse_events,
                                         start_job)
from sesame_server.audio.formats import OPENAI_FORMATS, UnsupportedFormat, openai_format
from sesame_server.engine.request import SpeechRequest
from sesame_server.engine.text import split_sentences
from sesame_server.logs import note_request
from sesame_server.runtime import request_id, runtime
from sesame_server.voices.catalogue import OPENAI_VOICES, VoiceNotFound

bp = Blueprint("openai", __name__, url_prefix="/v1")
bp.register_error_handler(APIError, openai_error)

MODEL_IDS = ("csm-1b", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_MAX_INSTRUCTIONS = 4096


@bp.post("/audio/speech")
def create_speech() -> Response:
    rt = runtime()
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    text = _input_text(body, rt.settings.max_input_length)
    voice = _voice(body, rt)
    response_format = _string(body, "response_format", rt.settings.default_format)
    try:
        fmt = openai_format(response_format)
    except UnsupportedFormat:
        raise APIError(
            400, f"Invalid response_format '{response_format}'. Supported: {', '.join(OPENAI_FORMATS)}.",
            param="response_format", code="invalid_value",
        ) from None
    speed = _speed(body)
    stream_format = _string(body, "stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise APIError(400, f"Invalid stream_format '{stream_format}'. Supported: audio, sse.",
                       param="stream_format", code="invalid_value")
    instructions = body.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > _MAX_INSTRUCTIONS):
        raise APIError(400, f"instructions must be a string of at most {_MAX_INSTRUCTIONS} characters.",
                       param="instructions", code="invalid_value")

    context = speech_context(body, voice, invalid_status=400)
    speech = SpeechRequest(
        text=text, sentences=tuple(split_sentences(text)), voice=voice, request_id=request_id(),
        speed=speed, stream=True, instructions=instructions or None, voice_prompt=rt.custom_voices.prompt(voice),
        dialect="openai", context=context.context, previous_text=context.previous_text,
        conversation=context.conversation,
    )
    note_request(format=fmt.name, streamed=True)
    # OpenAI always answers with chunked audio: every response here streams.
    job, blocks = start_job(rt.engine, speech)
    pipeline = pipeline_for(rt.engine, fmt, speed, streaming=True)
    chunks = encoded_chunks(job, blocks, pipeline, rt.settings.stream_chunk_size)
    if stream_format == "sse":
        def usage() -> dict:
            input_tokens = math.ceil(len(text) / 4)  # ~4 characters per text token
            return {"input_tokens": input_tokens, "output_tokens": job.frames,
                    "total_tokens": input_tokens + job.frames}
        return Response(sse_events(chunks, usage), content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", **context_headers(job)})
    return Response(chunks, content_type=fmt.content_type, headers=context_headers(job))


def _string(body: dict, key: str, default: str) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise APIError(400, f"{key} must be a string.", param=key, code="invalid_type")
    return value


def _input_text(body: dict, max_length: int) -> str:
    text = body.get("input")
    if text is None:
        raise APIError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if not isinstance(text, str):
        raise APIError(400, "input must be a string.", param="input", code="invalid_type")
    if len(text) > max_length:
        raise APIError(400, f"Input exceeds maximum length of {max_length} characters (got {len(text)}).",
                       param="input", code="input_too_long")
    if not text.strip():
        raise APIError(400, "input must contain some text to speak.", param="input", code="empty_input")
    return text


def _voice(body: dict, rt) -> str:
    voice = body.get("voice")
    if isinstance(voice, dict):  # openai-python 3.x: {"id": "..."}
        voice = voice.get("id")
    if voice is None:
        return rt.catalogue.default.id
    if not isinstance(voice, str):
        raise APIError(400, "voice must be a string or an object with an 'id'.", param="voice", code="invalid_type")
    try:
        return rt.catalogue.resolve(voice).id
    except VoiceNotFound as exc:
        raise APIError(400, str(exc), param="voice", code="voice_not_found") from None


def _speed(body: dict) -> float:
    speed = body.get("speed", 1.0)
    if speed is None:
        return 1.0
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
        raise APIError(400, "speed must be a number between 0.25 and 4.0.", param="speed", code="invalid_type")
    if not 0.25 <= speed <= 4.0:
        raise APIError(400, f"speed must be between 0.25 and 4.0 (got {speed}).", param="speed", code="invalid_value")
    return float(speed)


@bp.get("/audio/voices")
def list_voices() -> Response:
    rt = runtime()
    local = [{"id": voice.id, "name": voice.name} for voice in rt.catalogue]
    aliases = [{"id": name, "name": f"{name} → {rt.catalogue.resolve(name).name}"} for name in sorted(OPENAI_VOICES)]
    return jsonify({"voices": local + aliases})


@bp.get("/audio/models")
def list_audio_models() -> Response:
    return jsonify({"models": [{"id": model_id} for model_id in MODEL_IDS]})


def openai_models() -> dict:
    created = int(runtime().started_at)
    return {"object": "list",
            "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "sesame-tts"}
                     for model_id in MODEL_IDS]}


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    return jsonify({"id": model_id, "object": "model", "created": int(runtime().started_at), "owned_by": "sesame-tts"})
