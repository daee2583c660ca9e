"""The ElevenLabs dialect, voices: list, search, get, settings, preview, add (clone), delete."""

from __future__ import annotations

import json
import logging
import threading

from flask import Blueprint, Response, jsonify, request, send_file

from sesame_server.api.errors import APIError, elevenlabs_error
from sesame_server.api.elevenlabs import DEFAULT_VOICE_SETTINGS
from sesame_server.api.streaming import encoded_chunks, pipeline_for, start_job
from sesame_server.audio.decode import UndecodableAudio, decode_audio
from sesame_server.audio.formats import elevenlabs_format
from sesame_server.backends.base import Voice
from sesame_server.engine.request import SpeechRequest
from sesame_server.engine.text import split_sentences
from sesame_server.runtime import Runtime, new_request_id, runtime
from sesame_server.voices.catalogue import elevenlabs_id
from sesame_server.voices.custom import SAMPLE_RATE

log = logging.getLogger(__name__)

bp = Blueprint("elevenlabs_voices", __name__)
bp.register_error_handler(APIError, elevenlabs_error)

MODEL_ID = "csm-1b"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MIN_REFERENCE_SECONDS, MAX_REFERENCE_SECONDS = 1.0, 30.0
MAX_NAME_LENGTH = 100
_PREVIEW_FORMAT = "mp3_44100_128"
_preview_lock = threading.Lock()


def voice_json(voice: Voice, rt: Runtime) -> dict:
    """An ElevenLabs Voice object with every field strict clients (elevenlabs-js) require."""
    voice_id = elevenlabs_id(voice)
    preview_url = f"{request.host_url}v1/voices/{voice_id}/preview"
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
    rt = runtime()
    return jsonify({"voices": [voice_json(voice, rt) for voice in rt.catalogue]})


@bp.get("/v2/voices")
def search() -> Response:
    rt = runtime()
    args = request.args
    try:
        page_size = int(args.get("page_size", 10))
        offset = int(args.get("next_page_token") or 0)
    except ValueError:
        raise APIError(422, "page_size and next_page_token must be integers.", param="page_size",
                       code="int_parsing") from None
    if not 1 <= page_size <= 100 or offset < 0:
        raise APIError(422, "page_size must be between 1 and 100.", param="page_size", code="value_error")
    voices = list(rt.catalogue)
    term = (args.get("search") or "").strip().lower()
    if term:
        voices = [v for v in voices if term in f"{v.name} {v.id} {v.description} {' '.join(map(str, v.labels.values()))}".lower()]
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
    return jsonify({"voices": [voice_json(v, rt) for v in page], "has_more": has_more, "total_count": len(voices),
                    "next_page_token": str(offset + page_size) if has_more else None})


@bp.get("/v1/voices/settings/default")
def default_settings() -> Response:
    return jsonify(dict(DEFAULT_VOICE_SETTINGS))


@bp.get("/v1/voices/<voice_id>")
def get_voice(voice_id: str) -> Response:
    rt = runtime()
    return jsonify(voice_json(_find(rt, voice_id), rt))


@bp.get("/v1/voices/<voice_id>/settings")
def voice_settings(voice_id: str) -> Response:
    _find(runtime(), voice_id)
    return jsonify(dict(DEFAULT_VOICE_SETTINGS))


@bp.get("/v1/voices/<voice_id>/preview")
def preview(voice_id: str) -> Response:
    """A few seconds of the voice, generated once per backend and voice, then served from disk."""
    rt = runtime()
    voice = _find(rt, voice_id)
    path = rt.settings.cache_dir / "previews" / rt.engine.backend.name / f"{voice.id}.mp3"
    with _preview_lock:  # one generation even when a voice picker asks for it many times at once
        if not path.is_file():
            text = f"Hi, I'm {voice.name.split(' (')[0]}. This is how I sound when we talk."
            speech = SpeechRequest(text=text, sentences=tuple(split_sentences(text)), voice=voice.id,
                                   request_id=new_request_id(), seed=0,
                                   voice_prompt=rt.custom_voices.prompt(voice.id))
            job, blocks = start_job(rt.engine, speech)
            pipeline = pipeline_for(rt.engine, elevenlabs_format(_PREVIEW_FORMAT), 1.0, streaming=False)
            audio = b"".join(encoded_chunks(job, blocks, pipeline, 1 << 30))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(audio)
            tmp.replace(path)
    return send_file(path, mimetype="audio/mpeg", max_age=3600)


@bp.post("/v1/voices/add")
def add_voice() -> Response:
    rt = runtime()
    if not getattr(rt.engine.backend, "can_clone", False):
        raise APIError(400, f"The {rt.engine.backend.name} backend cannot clone voices; cloning needs "
                            "BACKEND=csm (Sesame CSM on MLX).", code="voice_cloning_unavailable")
    form = request.form
    name = (form.get("name") or "").strip()
    if not name:
        raise APIError(422, "Field required: 'name'.", param="name", code="missing")
    if len(name) > MAX_NAME_LENGTH:
        raise APIError(400, f"name must be at most {MAX_NAME_LENGTH} characters.", code="invalid_name")
    uploads = request.files.getlist("files")
    if not uploads:
        raise APIError(422, "Field required: 'files' (one or more audio files).", param="files", code="missing")
    audio = _reference_audio(uploads)
    labels = _labels(form.get("labels"))
    voice = rt.custom_voices.add(name, audio, transcript=(form.get("transcript") or "").strip(),
                                 description=(form.get("description") or "").strip(), labels=labels)
    rt.catalogue.add(voice.as_voice())
    log.info("Added cloned voice %s (%r, %.1f s of reference audio)", voice.voice_id, name, voice.seconds)
    return jsonify({"voice_id": voice.voice_id, "requires_verification": False})


@bp.delete("/v1/voices/<voice_id>")
def delete_voice(voice_id: str) -> Response:
    rt = runtime()
    voice = _find(rt, voice_id)
    if voice.category != "cloned":
        raise APIError(400, f"'{voice_id}' is a built-in voice and cannot be deleted.", code="voice_not_deletable")
    rt.custom_voices.delete(voice.id)
    rt.catalogue.remove(voice.id)
    return jsonify({"status": "ok"})


def _reference_audio(uploads) -> "np.ndarray":  # noqa: F821 - numpy only in the annotation
    import numpy as np

    parts = []
    for upload in uploads:
        data = upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise APIError(413, f"Each file must be at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
                           code="file_too_large")
        try:
            parts.append(decode_audio(data, SAMPLE_RATE, max_seconds=MAX_REFERENCE_SECONDS))
        except UndecodableAudio as exc:
            raise APIError(400, f"'{upload.filename or 'file'}' is not audio we can read: {exc}.",
                           code="invalid_audio") from None
    audio = np.concatenate(parts)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_REFERENCE_SECONDS:
        raise APIError(400, f"The reference audio is {seconds:.1f} s; at least {MIN_REFERENCE_SECONDS:.0f} s "
                            "is needed.", code="audio_too_short")
    if seconds > MAX_REFERENCE_SECONDS:
        raise APIError(400, f"The reference audio is longer than {MAX_REFERENCE_SECONDS:.0f} s; trim it "
                            "(10-20 s of clear speech works best).", code="audio_too_long")
    if float(np.sqrt(np.mean(np.square(audio)))) < 1e-4:
        raise APIError(400, "The reference audio is silent.", code="invalid_audio")
    return audio


def _labels(raw: str | None) -> dict:
    # The Python SDK sends the string "null" when no labels were given.
    if raw in (None, "", "null"):
        return {}
    try:
        labels = json.loads(raw)
    except ValueError:
        raise APIError(422, "labels must be a JSON object of strings.", param="labels", code="json_invalid") from None
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise APIError(422, "labels must be a JSON object of strings.", param="labels", code="dict_type")
    return {str(key)[:100]: str(value)[:200] for key, value in labels.items()}
