"""ElevenLabs text to speech: /v1/text-to-speech/{voice_id}[/stream][/with-timestamps]."""

from __future__ import annotations

import base64

from flask import Blueprint, Response, jsonify, request

from sesame_server.api.callers import caller
from sesame_server.api.elevenlabs.schema import ParsedSpeech, TextToSpeechBody, parse_speech
from sesame_server.api.elevenlabs.wire import ndjson_with_timestamps
from sesame_server.api.serving import Synthesis, buffered, streamed, synthesize
from sesame_server.api.validation import json_body, validate
from sesame_server.engine.alignment import CharacterTimeline, estimate_alignment
from sesame_server.runtime import request_id, runtime
from sesame_server.spoken.alignment import SourceTimeline, source_alignment

bp = Blueprint("elevenlabs_tts", __name__, url_prefix="/v1/text-to-speech")


def _parse(voice_id: str, *, streaming: bool) -> ParsedSpeech:
    body = validate(TextToSpeechBody, json_body(422))
    return parse_speech(voice_id, body, request.args, runtime(), caller(), request_id(), streaming=streaming)


@bp.post("/<voice_id>")
def convert(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=False)
    synthesis = synthesize(parsed.speech, parsed.fmt, streaming=False)
    audio = buffered(synthesis)
    return _with_headers(Response(audio, content_type=parsed.fmt.content_type), parsed, synthesis)


@bp.post("/<voice_id>/stream")
def stream(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=True)
    synthesis = synthesize(parsed.speech, parsed.fmt, streaming=True)
    return _with_headers(Response(streamed(synthesis), content_type=parsed.fmt.content_type), parsed, synthesis)


@bp.post("/<voice_id>/with-timestamps")
def convert_with_timestamps(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=False)
    synthesis = synthesize(parsed.speech, parsed.fmt, streaming=False)
    audio = buffered(synthesis)
    seconds = synthesis.pipeline.seconds_out
    normalized = estimate_alignment(parsed.speech.text, seconds)  # what was spoken
    alignment = source_alignment(parsed.spoken, normalized, seconds)  # what was sent
    body = {"audio_base64": base64.b64encode(audio).decode("ascii"), "alignment": alignment.as_dict(),
            "normalized_alignment": normalized.as_dict()}
    return _with_headers(jsonify(body), parsed, synthesis)


@bp.post("/<voice_id>/stream/with-timestamps")
def stream_with_timestamps(voice_id: str) -> Response:
    parsed = _parse(voice_id, streaming=True)
    synthesis = synthesize(parsed.speech, parsed.fmt, streaming=True)
    timeline = CharacterTimeline(parsed.speech.text, parsed.speech.speed)
    pipeline = synthesis.pipeline
    lines = ndjson_with_timestamps(synthesis.chunks, timeline, SourceTimeline(parsed.spoken),
                                   lambda: pipeline.seconds_out)
    return _with_headers(Response(lines, content_type="application/x-ndjson"), parsed, synthesis)


def _with_headers(response: Response, parsed: ParsedSpeech, synthesis: Synthesis) -> Response:
    response.headers.update(synthesis.headers)
    characters = str(len(parsed.speech.text))
    response.headers["character-cost"] = characters
    response.headers["x-character-count"] = characters
    response.headers["history-item-id"] = parsed.speech.request_id
    return response
