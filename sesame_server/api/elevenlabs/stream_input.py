"""ElevenLabs WebSockets on the HTTP port (LiveKit derives the ws:// URL from the one base
URL): GET /v1/text-to-speech/{voice_id}/stream-input and /multi-stream-input, and the
text-to-dialogue ones, /v1/text-to-dialogue/stream-input and /multi-stream-input.

Everything a request can get wrong is answered before the upgrade, as an HTTP error in
ElevenLabs' shape (the client sees the handshake fail with that status): the Host, the
page it comes from, the key (when sent as a header or the `authorization` query), the
query, the voice, the format. The key may also come in the first message (`xi_api_key`):
such a socket waits in the small MAX_PENDING_WEBSOCKETS pool, not in MAX_WEBSOCKETS, until
it shows the key, within WS_FIRST_MESSAGE_SECONDS.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import replace
from typing import Annotated, Callable, Literal

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, ConfigDict, Field
from websockets.sync.connection import Connection

from sesame_server.api.callers import caller
from sesame_server.api.elevenlabs.schema import (
    MAX_SEED,
    output_format,
    resolve_voice,
    temperature,
    voice_settings,
)
from sesame_server.api.elevenlabs.stream_context import StreamLimits, StreamOptions
from sesame_server.api.elevenlabs.stream_messages import (
    DIALOGUE_WIRE,
    MAX_KEY_LENGTH,
    TRY_AGAIN,
    TTS_WIRE,
    ClientMessage,
    ProtocolError,
)
from sesame_server.api.elevenlabs.stream_session import StreamSession
from sesame_server.api.errors import APIError
from sesame_server.api.validation import validate
from sesame_server.api.websocket import upgrade
from sesame_server.context.conversation import Caller
from sesame_server.context.fields import MAX_NAME_LENGTH
from sesame_server.engine.job import Job
from sesame_server.ops.request_log import job_fields, log_request, note_request
from sesame_server.realtime.sockets import OpenSockets
from sesame_server.realtime.speaker import Speaker, Voicing
from sesame_server.runtime import Runtime, runtime

bp = Blueprint("elevenlabs_stream_input", __name__, url_prefix="/v1")

DEFAULT_INACTIVITY_SECONDS, MAX_INACTIVITY_SECONDS = 20, 180
# The key may come in the first message: the guard lets these through without one.
KEY_IN_FIRST_MESSAGE = frozenset({"stream_input", "multi_stream_input", "dialogue_stream_input",
                                  "dialogue_multi_stream_input"})


_Name = Annotated[str, Field(max_length=MAX_NAME_LENGTH)]


class StreamInputQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", title="ElevenLabs stream-input query")

    model_id: _Name | None = Field(None, description="Any id; every model is served by the local one.")
    output_format: _Name | None = Field(None, description="Any streamable format (not wav).")
    inactivity_timeout: Annotated[int, Field(ge=1, le=MAX_INACTIVITY_SECONDS)] = DEFAULT_INACTIVITY_SECONDS
    sync_alignment: bool | None = Field(None, description="Every audio message carries its alignment anyway.")
    auto_mode: bool | None = Field(None, description="Speak at sentence ends only; no chunk_length_schedule.")
    enable_logging: bool | None = None
    enable_ssml_parsing: bool | None = None
    language_code: _Name | None = None
    apply_text_normalization: Literal["auto", "on", "off"] | None = None
    apply_language_text_normalization: bool | None = None
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = None
    authorization: Annotated[str, Field(max_length=MAX_KEY_LENGTH)] | None = Field(
        None, description="The API key, instead of the xi-api-key header.")


@bp.route("/text-to-speech/<voice_id>/stream-input", websocket=True)
def stream_input(voice_id: str) -> Response:
    return _upgrade(voice_id, multi=False)


@bp.route("/text-to-speech/<voice_id>/multi-stream-input", websocket=True)
def multi_stream_input(voice_id: str) -> Response:
    return _upgrade(voice_id, multi=True)


@bp.route("/text-to-dialogue/stream-input", websocket=True)
def dialogue_stream_input() -> Response:
    """OpenClaw's newest models: {"voices": [..]}, then turns {"inputs": [..], "flush": true},
    each answered by its audio and {"is_final_audio_for_turn": true}."""
    return _upgrade(None, multi=False)


@bp.route("/text-to-dialogue/multi-stream-input", websocket=True)
def dialogue_multi_stream_input() -> Response:
    """LiveKit's eleven_v3* models: contexts as in multi-stream-input, text as `inputs`."""
    return _upgrade(None, multi=True)


def _upgrade(voice_id: str | None, *, multi: bool) -> Response:
    rt = runtime()
    args = validate(StreamInputQuery, request.args, where="query")
    dialogue = voice_id is None
    voice = resolve_voice(rt, voice_id) if voice_id is not None else rt.catalogue.default
    fmt = output_format(args.output_format or rt.settings.default_output_format, True, "query")
    key = _key_still_needed(rt, args)
    who = caller()
    note_request(voice=voice.id, format=fmt.name, streamed=True)  # the upgrade's own log line
    socket_id = uuid.uuid4().hex[:12]
    route = (f"/v1/text-to-dialogue/{'multi-' if multi else ''}stream-input" if dialogue else
             f"/v1/text-to-speech/{{voice_id}}/{'multi-' if multi else ''}stream-input")

    def voicing(context_id: str | None, first: ClientMessage) -> Voicing:
        settings = voice_settings(first.voice_settings)
        session = f"ws:{socket_id}:{context_id or ''}"  # a context's pieces continue each other
        named = (first.voices or [line.voice_id for line in first.inputs or ()] or [None])[0]
        chosen = _line_voice(rt, named) if dialogue and named else voice
        return Voicing(voice=chosen.id, fmt=fmt, caller=Caller(session, who.api_key, who.address),
                       speed=settings["speed"], temperature=temperature(settings), seed=args.seed,
                       reference=rt.custom_voices.reference(chosen.id), normalization=args.apply_text_normalization)

    def line_voice(base: Voicing, voice_id: str) -> Voicing:
        chosen = _line_voice(rt, voice_id)
        return replace(base, voice=chosen.id, reference=rt.custom_voices.reference(chosen.id))

    def speaker(voicing: Voicing, context_id: str | None) -> Speaker:
        return Speaker(rt, voicing, lambda job: record_piece(rt, job, route, "WS", context_id, fmt.name))

    first_message, silent = _first_message(rt, args, key)
    options = StreamOptions(multi=multi, route=route, auto_mode=bool(args.auto_mode),
                            inactivity_timeout=float(args.inactivity_timeout), key=key, voicing=voicing,
                            speaker=speaker, wire=DIALOGUE_WIRE if dialogue else TTS_WIRE,
                            line_voice=line_voice if dialogue else None, first_message_timeout=first_message, silent=silent,
                            limits=StreamLimits.of(rt.settings))

    def session(connection: Connection) -> None:
        admit = (lambda: _admit(rt.sockets, connection)) if key is not None else None
        StreamSession(connection, replace(options, admit=admit)).run()

    return upgrade(session, route.rsplit("/", 1)[-1], pending=key is not None)


def _first_message(rt: Runtime, args: StreamInputQuery, key: str | None) -> tuple[float, Callable[[], ProtocolError]]:
    """How long a socket may send nothing at all, and the error that closes it then.

    A socket whose key is still to come must show it soon (it holds a pending slot
    meanwhile); one that showed it may stay silent as long as ElevenLabs allows (Pipecat's
    first keep-alive comes 10 s after it connects)."""
    if key is not None:
        seconds = rt.settings.ws_first_message_seconds
        return seconds, lambda: ProtocolError(
            f"No API key within {seconds:g} seconds of connecting: send it as the xi-api-key header or as "
            "xi_api_key in the first message.", "invalid_api_key")
    seconds = float(args.inactivity_timeout)
    return seconds, lambda: ProtocolError(f"No message within {seconds:g} seconds of connecting: connection "
                                          "closed.", "input_timeout_exceeded")


def _admit(sockets: OpenSockets, connection: Connection) -> None:
    """The key came in the first message: the socket leaves the pending pool for a real slot."""
    if not sockets.admit(connection):
        raise ProtocolError(f"{sockets.limit} WebSocket connections are open (MAX_WEBSOCKETS); try again later.",
                            "system_busy", TRY_AGAIN)


def _line_voice(rt: Runtime, voice_id: str):
    try:
        return resolve_voice(rt, voice_id)
    except APIError as exc:
        raise ProtocolError(exc.message, exc.code or "voice_not_found") from None


def _key_still_needed(rt: Runtime, args: StreamInputQuery) -> str | None:
    """The key the first message must carry; None when there is none, or the request showed it."""
    expected = rt.settings.api_key
    if not expected or not g.get("sesame_key_deferred"):
        return None  # no key set, or the guard already checked the header
    if args.authorization is not None:
        given = args.authorization.removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise APIError(401, "Invalid API key in the authorization query parameter.", code="invalid_api_key")
        return None
    return expected


def record_piece(rt: Runtime, job: Job, route: str, method: str, context_id: str | None = None,
                 fmt: str | None = None) -> None:
    """Each piece (a WebSocket context's, a dialogue's line) is logged and measured like an
    HTTP request of the same dialect."""
    speech = job.request
    fields = {"request_id": speech.request_id, "dialect": "elevenlabs", "method": method, "route": route,
              "voice": speech.voice, "format": fmt, "input_length": len(speech.text), "streamed": True,
              "status": 200, "context_id": context_id}
    fields.update(job_fields(job))
    started = job.submitted_at
    fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    log_request(**fields)
    rt.metrics.observe_record(fields, job)
