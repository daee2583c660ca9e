"""The routes as the OpenAPI document describes them: one declarative row per operation.

Bodies and queries are the pydantic models the routes validate with; output formats come
from audio/formats.py; path parameters are read from the app's url_map (their converters).
Only what has no model is written here: /v2/voices' query (voices.py reads it by hand) and
the voice upload's form fields (cloning.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from pydantic import BaseModel

from sesame_server.api.callers import SESSION_HEADER
from sesame_server.api.elevenlabs.cloning import MAX_NAME_LENGTH
from sesame_server.api.elevenlabs.dialogue import TextToDialogueBody
from sesame_server.api.elevenlabs.schema import TextToSpeechBody, TextToSpeechQuery
from sesame_server.api.elevenlabs.stream_input import StreamInputQuery
from sesame_server.api.models import ELEVENLABS_ALIASES
from sesame_server.api.spoken_route import NormalizeBody
from sesame_server.api.openai.schema import MODEL_IDS, SpeechBody
from sesame_server.audio.formats import (ELEVENLABS_FORMATS, ELEVENLABS_STREAM_FORMATS, OPENAI_FORMATS,
                                         elevenlabs_format, openai_format)
from sesame_server.voices.catalogue import OPENAI_VOICES

OPENAI, ELEVENLABS, SYSTEM = "openai", "elevenlabs", "system"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI template: /v1/voices/{voice_id}
    operation_id: str
    tags: tuple[str, ...]  # the dialect(s); /v1/models answers in both, chosen by the client's headers
    summary: str
    ok: Mapping[str, dict]  # 200: media type -> media type object
    errors: tuple[int, ...] = ()  # besides what every route may answer (guards, key, default)
    body: type[BaseModel] | None = None  # application/json
    query: type[BaseModel] | None = None
    formats: tuple[str, ...] = ()  # the output_format values this route accepts (ElevenLabs query)
    parameters: tuple[dict, ...] = ()  # parameters no model describes
    form: dict | None = None  # multipart/form-data schema
    example: dict | None = None  # a request body that synthesizes
    open: bool = False  # served without the API key
    synthesizes: bool = False  # queued on the engine: 429 (Retry-After), 500, 503
    also: Mapping[int, str] = field(default_factory=dict)  # other statuses with the 200 body
    websocket: bool = False  # answers 101 and speaks a WebSocket protocol (README); no 200


def _audio(content_types) -> dict:
    return {content_type: {"schema": {"type": "string", "contentMediaType": content_type}}
            for content_type in dict.fromkeys(content_types)}


def _json(kind: str = "object") -> dict:
    return {"application/json": {"schema": {"type": kind}}}


def _text(media_type: str, description: str) -> dict:
    return {media_type: {"schema": {"type": "string", "description": description}}}


OPENAI_AUDIO = {
    **_audio(openai_format(name).content_type for name in OPENAI_FORMATS),
    **_text("text/event-stream", "stream_format=sse: `data: {json}` events, speech.audio.delta (base64 audio) "
                                 "then speech.audio.done with usage; an `error` event if generation fails."),
}
ELEVENLABS_AUDIO = _audio(elevenlabs_format(name).content_type for name in ELEVENLABS_FORMATS)
ELEVENLABS_STREAM_AUDIO = _audio(elevenlabs_format(name, streaming=True).content_type
                                 for name in ELEVENLABS_STREAM_FORMATS)
NDJSON = _text("application/x-ndjson", "One JSON object per line: audio_base64, alignment, normalized_alignment; "
                                       "an error object in ElevenLabs' shape if generation fails.")

_SPEECH_EXAMPLE = {"model": MODEL_IDS[0], "input": "Hello from the local voice.", "voice": next(iter(OPENAI_VOICES)),
                   "response_format": OPENAI_FORMATS[0]}
_TTS_EXAMPLE = {"text": "Hello from the local voice.", "model_id": ELEVENLABS_ALIASES[0]}
_DIALOGUE_EXAMPLE = {"inputs": [{"text": "Hello there.", "voice_id": "conversationala"},
                                {"text": "Hi! How are you?", "voice_id": "conversationalb"}], "model_id": "eleven_v3"}

_SESSION = ({"name": SESSION_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
             "description": "Conversation memory: whose turns follow each other (default: the API key and "
                            "address)."},)
_SEARCH_PARAMETERS = (
    {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
    {"name": "next_page_token", "in": "query", "description": "The offset the previous page returned.",
     "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    {"name": "search", "in": "query", "description": "Matched against name, id, description and labels.",
     "schema": {"type": "string"}},
    {"name": "category", "in": "query", "schema": {"type": "string"}},
    {"name": "voice_type", "in": "query", "description": "personal / non-default: cloned voices; default: built-in.",
     "schema": {"type": "string"}},
    {"name": "voice_ids", "in": "query", "style": "form", "explode": True,
     "schema": {"type": "array", "items": {"type": "string"}}},
)

VOICE_UPLOAD = {
    "type": "object",
    "required": ["name", "files"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
        "files": {"type": "array", "minItems": 1, "description": "Reference audio, 1-30 s in all.",
                  "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}},
        "description": {"type": "string"},
        "labels": {"type": "string", "contentMediaType": "application/json",
                   "description": "A JSON object of strings (or null)."},
        "transcript": {"type": "string", "description": "What the reference audio says."},
    },
}


def _tts(suffix: str, operation_id: str, summary: str, ok: Mapping[str, dict], formats: tuple[str, ...]) -> Route:
    return Route("POST", "/v1/text-to-speech/{voice_id}" + suffix, operation_id, (ELEVENLABS,), summary, ok,
                 errors=(400, 422), body=TextToSpeechBody, query=TextToSpeechQuery, formats=formats,
                 parameters=_SESSION, example=_TTS_EXAMPLE, synthesizes=True)


ROUTES: tuple[Route, ...] = (
    # OpenAI
    Route("POST", "/v1/audio/speech", "createSpeech", (OPENAI,), "Speak text (always streamed)", OPENAI_AUDIO,
          errors=(400,), body=SpeechBody, parameters=_SESSION, example=_SPEECH_EXAMPLE, synthesizes=True),
    Route("GET", "/v1/audio/voices", "listAudioVoices", (OPENAI,), "Local voices and OpenAI voice names",
          _json()),
    Route("GET", "/v1/audio/models", "listAudioModels", (OPENAI,), "Speech model ids", _json()),
    Route("GET", "/v1/models/{model_id}", "retrieveModel", (OPENAI,), "A model (any id is served)", _json()),
    Route("GET", "/v1/models", "listModels", (OPENAI, ELEVENLABS),
          "Models: OpenAI's list object, or ElevenLabs' array for clients that send xi-api-key or an "
          "ElevenLabs User-Agent / X-Fern-SDK-Name",
          {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}}}),
    # ElevenLabs: text to speech
    _tts("", "textToSpeech", "Speak text (whole body)", ELEVENLABS_AUDIO, ELEVENLABS_FORMATS),
    _tts("/stream", "textToSpeechStream", "Speak text (chunked audio)", ELEVENLABS_STREAM_AUDIO,
         ELEVENLABS_STREAM_FORMATS),
    _tts("/with-timestamps", "textToSpeechWithTimestamps", "Speak text, with character timings", _json(),
         ELEVENLABS_FORMATS),
    _tts("/stream/with-timestamps", "textToSpeechStreamWithTimestamps",
         "Speak text, streamed as NDJSON with character timings", NDJSON, ELEVENLABS_STREAM_FORMATS),
    # ElevenLabs: WebSockets (the key may also come in the first message: xi_api_key)
    *(Route("GET", path, operation_id, (ELEVENLABS,), summary, {}, errors=(400, 401, 422, 426, 501, 503),
            query=StreamInputQuery, formats=ELEVENLABS_STREAM_FORMATS, websocket=True, open=True)
      for path, operation_id, summary in (
          ("/v1/text-to-speech/{voice_id}/stream-input", "textToSpeechStreamInput",
           "WebSocket: text in as it is written, audio out"),
          ("/v1/text-to-speech/{voice_id}/multi-stream-input", "textToSpeechMultiStreamInput",
           "WebSocket: several contexts (replies) on one socket; close_context interrupts"),
          ("/v1/text-to-dialogue/stream-input", "textToDialogueStreamInput",
           "WebSocket: dialogue turns ({inputs, flush}), each ended by is_final_audio_for_turn"),
          ("/v1/text-to-dialogue/multi-stream-input", "textToDialogueMultiStreamInput",
           "WebSocket: dialogue contexts, text as inputs [{text, voice_id}]"))),
    # ElevenLabs: text to dialogue
    *(Route("POST", path, operation_id, (ELEVENLABS,), summary, ok, errors=(400, 422), body=TextToDialogueBody,
            query=TextToSpeechQuery, formats=formats, example=_DIALOGUE_EXAMPLE, synthesizes=True)
      for path, operation_id, summary, ok, formats in (
          ("/v1/text-to-dialogue", "textToDialogue", "Speak a dialogue: lines in order, each in its voice",
           ELEVENLABS_AUDIO, ELEVENLABS_FORMATS),
          ("/v1/text-to-dialogue/stream", "textToDialogueStream", "Speak a dialogue (chunked audio)",
           ELEVENLABS_STREAM_AUDIO, ELEVENLABS_STREAM_FORMATS))),
    # ElevenLabs: voices
    Route("GET", "/v1/voices", "getVoices", (ELEVENLABS,), "Every voice", _json()),
    Route("GET", "/v2/voices", "searchVoices", (ELEVENLABS,), "Search voices, a page at a time", _json(),
          errors=(422,), parameters=_SEARCH_PARAMETERS),
    Route("GET", "/v1/voices/settings/default", "getDefaultVoiceSettings", (ELEVENLABS,),
          "The default voice settings", _json()),
    Route("GET", "/v1/voices/{voice_id}", "getVoice", (ELEVENLABS,), "A voice", _json(), errors=(404,)),
    Route("GET", "/v1/voices/{voice_id}/settings", "getVoiceSettings", (ELEVENLABS,), "A voice's settings",
          _json(), errors=(404,)),
    Route("GET", "/v1/voices/{voice_id}/preview", "getVoicePreview", (ELEVENLABS,),
          "A few seconds of the voice (generated once, then cached)", _audio(["audio/mpeg"]), errors=(404,),
          synthesizes=True),
    Route("POST", "/v1/voices/add", "addVoice", (ELEVENLABS,),
          "Clone a voice from reference audio (backends that can clone; 400 voice_cloning_unavailable "
          "otherwise)", _json(), errors=(400, 422), form=VOICE_UPLOAD),
    Route("DELETE", "/v1/voices/{voice_id}", "deleteVoice", (ELEVENLABS,), "Delete a cloned voice", _json(),
          errors=(400, 404)),
    # ElevenLabs: account
    Route("GET", "/v1/user", "getUser", (ELEVENLABS,), "The local account", _json()),
    Route("GET", "/v1/user/subscription", "getSubscription", (ELEVENLABS,), "The local (unlimited) subscription",
          _json()),
    # Operations (errors in OpenAI's shape)
    Route("GET", "/health", "getHealth", (SYSTEM,), "Liveness (200 while loading; the body's status says "
          "ok | loading | error)", _json(), open=True,
          also={503: "The model failed to load or the engine stopped: restart (same body)"}),
    Route("GET", "/ready", "getReady", (SYSTEM,), "Readiness for a load balancer: loaded, warmed, the queue "
          "below MAX_QUEUE_DEPTH, not draining", _json(), open=True,
          also={503: "Not ready now (reason: loading | queue_full | draining | error), with Retry-After"}),
    Route("GET", "/metrics", "getMetrics", (SYSTEM,), "Prometheus metrics",
          {**_text("text/plain", "Prometheus text exposition"),
           **_text("application/openmetrics-text", "OpenMetrics, when the Accept header asks for it")}),
    Route("GET", "/", "getPlayground", (SYSTEM,), "The playground page", _text("text/html", "The page")),
    Route("GET", "/{name}", "getPlaygroundAsset", (SYSTEM,), "The playground's script, style sheet and icon",
          {**_text("text/javascript", "Script"), **_text("text/css", "Style sheet"),
           **_text("image/svg+xml", "Icon")}),
    Route("GET", "/favicon.ico", "getFavicon", (SYSTEM,), "The icon browsers ask for (SVG)",
          _text("image/svg+xml", "Icon"), open=True),
    Route("GET", "/openapi.json", "getOpenAPIDocument", (SYSTEM,), "This document", _json()),
    Route("POST", "/v1/text/normalize", "normalizeText", (SYSTEM,), "What the voice will say for a text",
          _json(), errors=(400,), body=NormalizeBody, example={"text": "**Total:** $12.50"}),
)

PATH_PARAMETER_DESCRIPTIONS = {
    "voice_id": "An ElevenLabs-style voice id (GET /v1/voices), or a local voice id.",
    "model_id": "Any model id; every model is served by the local one.",
}
