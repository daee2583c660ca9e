"""ElevenLabs voices: list, search, get, settings, preview, add (clone), delete."""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, Response, jsonify, request, send_file

from sesame_server.api.elevenlabs.cloning import read_upload
from sesame_server.api.elevenlabs.schema import DEFAULT_VOICE_SETTINGS
from sesame_server.api.errors import APIError
from sesame_server.api.serving import buffered, synthesize
from sesame_server.audio.formats import elevenlabs_format
from sesame_server.backends.base import Voice, VoiceUnavailable
from sesame_server.engine.request import SpeechRequest
from sesame_server.runtime import Runtime, new_request_id, runtime
from sesame_server.voices.catalogue import elevenlabs_id
from sesame_server.voices.custom import StorageFull

log = logging.getLogger(__name__)

bp = Blueprint("elevenlabs_voices", __name__)

MODEL_ID = "csm-1b"
_PREVIEW_FORMAT = "mp3_44100_128"
PREPARE_TIMEOUT_SECONDS = 120.0  # a new voice waits for the job in progress, then is encoded
_preview_lock = threading.Lock()


def voice_json(voice: Voice) -> dict:
    """An ElevenLabs Voice object with every field strict clients (elevenlabs-js) require."""
    voice_id = elevenlabs_id(voice)
    preview_url = f"{runtime().public_url}/v1/voices/{voice_id}/preview"  # never from the Host header
    cloned = voice.category == "cloned"
    return {
        "voice_id": voice_id,
        "name": voice.name,
        "samples": None,
        "category": voice.category,
        "fine_tuning": None,
        "labels": {key: str(value) for key, value in voice.labels.items()},
        "description": voice.description or None,
        "preview_url": preview_url,
        "available_for_tiers": [],
        "settings": dict(DEFAULT_VOICE_SETTINGS),
        "sharing": None,
        "high_quality_base_model_ids": [MODEL_ID],
        "verified_languages": [{"language": "en", "model_id": MODEL_ID, "accent": voice.labels.get("accent"),
                                "locale": "en-US", "preview_url": preview_url}],
        "collection_ids": [],
        "safety_control": None,
        "voice_verification": None,
        "permission_on_resource": "admin" if cloned else None,
        "is_owner": cloned,
        "is_legacy": False,
        "is_mixed": False,
        "created_at_unix": None,
        # ours: the id the OpenAI dialect and the CLI use
        "local_voice_id": voice.id,
    }


def _find(rt: Runtime, voice_id: str) -> Voice:
    voice = rt.catalogue.get(voice_id)
    if voice is None:
        raise APIError(404, f"A voice with voice_id '{voice_id}' was not found.", code="voice_not_found")
    return voice


@bp.get("/v1/voices")
def get_all() -> Response:
    return jsonify({"voices": [voice_json(voice) for voice in runtime().catalogue]})


@bp.get("/v2/voices")
def search() -> Response:
    args = request.args
    page_size = _query_int("page_size", "10", 1, 100)
    offset = _query_int("next_page_token", "0", 0, None)  # past the end: an empty page, as after the last one
    voices = list(runtime().catalogue)
    term = (args.get("search") or "").strip().lower()
    if term:
        voices = [v for v in voices
                  if term in f"{v.name} {v.id} {v.description} {' '.join(map(str, v.labels.values()))}".lower()]
    if args.get("category"):
        voices = [v for v in voices if v.category == args["category"]]
    if args.get("voice_type") in ("personal", "non-default"):
        voices = [v for v in voices if v.category == "cloned"]
    elif args.get("voice_type") == "default":
        voices = [v for v in voices if v.category != "cloned"]
    wanted_ids = args.getlist("voice_ids")
    if wanted_ids:
        voices = [v for v in voices if elevenlabs_id(v) in wanted_ids or v.id in wanted_ids]
    page = voices[offset:offset + page_size]
    has_more = offset + page_size < len(voices)
    return jsonify({"voices": [voice_json(v) for v in page], "has_more": has_more, "total_count": len(voices),
                    "next_page_token": str(offset + page_size) if has_more else None})


def _query_int(name: str, default: str, low: int, high: int | None) -> int:
    raw = request.args.get(name) or default
    try:
        value = int(raw)
    except ValueError:  # also a number of more than 4300 digits
        value, kind, message = None, "int_parsing", f"{name} must be an integer."
    else:
        kind = "value_error"
        message = f"{name} must be at least {low}." if high is None else f"{name} must be between {low} and {high}."
    if value is None or value < low or (high is not None and value > high):
        raise APIError(422, message, param=name, code=kind,
                       details=[{"loc": ["query", name], "msg": message, "type": kind}])
    return value


@bp.get("/v1/voices/settings/default")
def default_settings() -> Response:
    return jsonify(dict(DEFAULT_VOICE_SETTINGS))


@bp.get("/v1/voices/<voice_id>")
def get_voice(voice_id: str) -> Response:
    return jsonify(voice_json(_find(runtime(), voice_id)))


@bp.get("/v1/voices/<voice_id>/settings")
def voice_settings(voice_id: str) -> Response:
    _find(runtime(), voice_id)
    return jsonify(dict(DEFAULT_VOICE_SETTINGS))


@bp.get("/v1/voices/<voice_id>/preview")
def preview(voice_id: str) -> Response:
    """A few seconds of the voice, generated once per backend and voice, then served from disk."""
    rt = runtime()
    voice = _find(rt, voice_id)
    path = rt.settings.cache_dir / "previews" / rt.engine.info.name / f"{voice.id}.mp3"
    with _preview_lock:  # one generation even when a voice picker asks for it many times at once
        if path.is_file():
            return send_file(path, mimetype="audio/mpeg", max_age=3600)
        text = f"Hi, I'm {voice.name.split(' (')[0]}. This is how I sound when we talk."
        speech = SpeechRequest(text=text, voice=voice.id, request_id=new_request_id(), seed=0,
                               reference=rt.custom_voices.reference(voice.id))
        audio = buffered(synthesize(speech, elevenlabs_format(_PREVIEW_FORMAT), streaming=False))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(audio)
            tmp.replace(path)
        except OSError as exc:  # a preview that cannot be cached is still served
            log.warning("Could not cache the preview of %s at %s: %s", voice.id, path, exc)
    return Response(audio, content_type="audio/mpeg", headers={"Cache-Control": "max-age=3600"})


@bp.post("/v1/voices/add")
def add_voice() -> Response:
    rt = runtime()
    info = rt.engine.info
    if not info.can_clone:
        raise APIError(400, f"The {info.name} backend cannot clone voices; cloning needs "
                            "BACKEND=csm (Sesame CSM on MLX).", code="voice_cloning_unavailable")
    upload = read_upload(request.form, request.files.getlist("files"))
    try:
        voice = rt.custom_voices.add(upload.name, upload.audio, transcript=upload.transcript,
                                     description=upload.description, labels=upload.labels)
    except StorageFull as exc:
        raise APIError(507, exc.strerror, code="insufficient_storage") from None
    try:
        # Encoded and prefilled now: a voice the model cannot use is refused, not kept.
        rt.engine.prepare_voice(rt.custom_voices.reference(voice.voice_id), timeout=PREPARE_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("Voice %s not prepared yet (the model stayed busy): its first request will", voice.voice_id)
    except Exception as exc:
        rt.custom_voices.delete(voice.voice_id)
        rt.catalogue.remove(voice.voice_id)  # a rescan may have found it on disk meanwhile
        if isinstance(exc, VoiceUnavailable):
            raise APIError(400, f"This voice cannot be used: {exc.reason}.", code="voice_unusable") from None
        raise
    rt.catalogue.add(voice.as_voice())
    log.info("Added cloned voice %s (%r, %.1f s of reference audio)", voice.voice_id, upload.name, voice.seconds)
    return jsonify({"voice_id": voice.voice_id, "requires_verification": False})


@bp.delete("/v1/voices/<voice_id>")
def delete_voice(voice_id: str) -> Response:
    rt = runtime()
    if voice_id in rt.catalogue.unusable:  # stored but unreadable: deleting it is the way out
        rt.custom_voices.delete(voice_id)
        rt.catalogue.remove(voice_id)
        return jsonify({"status": "ok"})
    voice = _find(rt, voice_id)
    if voice.category != "cloned":
        raise APIError(400, f"'{voice_id}' is a built-in voice and cannot be deleted.", code="voice_not_deletable")
    rt.custom_voices.delete(voice.id)
    rt.catalogue.remove(voice.id)
    rt.engine.forget_voice(voice.id)  # its prompt codes and KV prefix, on the inference thread
    return jsonify({"status": "ok"})
