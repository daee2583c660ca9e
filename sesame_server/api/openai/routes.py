"""OpenAI routes: POST /v1/audio/speech and the voice/model lists clients probe."""

from __future__ import annotations

import math

from flask import Blueprint, Response, jsonify

from sesame_server.api.callers import caller
from sesame_server.api.openai.schema import MODEL_IDS, SpeechBody, parse_speech
from sesame_server.api.openai.wire import sse_events
from sesame_server.api.serving import streamed, synthesize
from sesame_server.api.validation import json_body, validate
from sesame_server.runtime import request_id, runtime
from sesame_server.voices.catalogue import OPENAI_VOICES

bp = Blueprint("openai", __name__, url_prefix="/v1")


@bp.post("/audio/speech")
def create_speech() -> Response:
    rt = runtime()
    body = validate(SpeechBody, json_body(400), status=400)
    parsed = parse_speech(body, rt, caller(), request_id())
    # OpenAI always answers with chunked audio: every response here streams.
    synthesis = synthesize(parsed.speech, parsed.fmt, streaming=True)
    if parsed.sse:
        job, text = synthesis.job, parsed.speech.text

        def usage() -> dict:
            input_tokens = math.ceil(len(text) / 4)  # ~4 characters per text token
            return {"input_tokens": input_tokens, "output_tokens": job.frames, "total_tokens": input_tokens + job.frames}

        return Response(sse_events(synthesis.chunks, usage), content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", **synthesis.headers})
    return Response(streamed(synthesis), content_type=parsed.fmt.content_type, headers=synthesis.headers)


@bp.get("/audio/voices")
def list_voices() -> Response:
    rt = runtime()
    local = [{"id": voice.id, "name": voice.name} for voice in rt.catalogue]
    aliases = [{"id": name, "name": f"{name} → {rt.catalogue.resolve(name).name}"} for name in sorted(OPENAI_VOICES)]
    return jsonify({"voices": local + aliases})


@bp.get("/audio/models")
def list_audio_models() -> Response:
    return jsonify({"models": [{"id": model_id} for model_id in MODEL_IDS]})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    return jsonify({"id": model_id, "object": "model", "created": int(runtime().started_at), "owned_by": "sesame-tts"})
