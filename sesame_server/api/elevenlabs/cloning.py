"""POST /v1/voices/add, the upload: every field checked before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from werkzeug.datastructures import FileStorage, MultiDict

from sesame_server.api.errors import APIError
from sesame_server.api.validation import parse_json
from sesame_server.audio.decode import UndecodableAudio, decode_audio
from sesame_server.audio.units import SAMPLE_RATE
from sesame_server.context.fields import speakable

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MIN_REFERENCE_SECONDS, MAX_REFERENCE_SECONDS = 1.0, 30.0
MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 1000
# What is said in 30 s of speech, with room to spare; the backend checks what its window holds.
MAX_TRANSCRIPT_LENGTH = 2000
MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 50, 100, 200
_SILENT_RMS = 1e-4


@dataclass(frozen=True)
class VoiceUpload:
    name: str
    audio: np.ndarray  # mono float32 at SAMPLE_RATE
    transcript: str
    description: str
    labels: dict[str, str]


def read_upload(form: MultiDict, files: list[FileStorage]) -> VoiceUpload:
    """Every field checked (cheap ones first) before the audio is decoded or anything stored."""
    name = _text(form, "name", MAX_NAME_LENGTH)
    if not name:
        raise APIError(422, "Field required: 'name'.", param="name", code="missing")
    transcript = _text(form, "transcript", MAX_TRANSCRIPT_LENGTH)
    description = _text(form, "description", MAX_DESCRIPTION_LENGTH)
    labels = _labels(form.get("labels"))
    if not files:
        raise APIError(422, "Field required: 'files' (one or more audio files).", param="files", code="missing")
    return VoiceUpload(name=name, audio=_reference_audio(files), transcript=transcript, description=description,
                       labels=labels)


def _text(form: MultiDict, field: str, limit: int) -> str:
    value = (form.get(field) or "").strip()
    if len(value) > limit:
        raise APIError(422, f"{field} must be at most {limit} characters (got {len(value)}).", param=field,
                       code="string_too_long")
    try:
        return speakable(value)
    except ValueError as exc:
        raise APIError(422, f"{field} {exc}.", param=field, code="value_error") from None


def _reference_audio(files: list[FileStorage]) -> np.ndarray:
    parts = []
    for upload in files:
        data = upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise APIError(413, f"Each file must be at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.",
                           param="files", code="file_too_large")
        try:
            parts.append(decode_audio(data, SAMPLE_RATE, max_seconds=MAX_REFERENCE_SECONDS))
        except UndecodableAudio as exc:
            raise APIError(400, f"'{upload.filename or 'file'}' is not audio we can read: {exc}.",
                           param="files", code="invalid_audio") from None
    audio = np.concatenate(parts)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_REFERENCE_SECONDS:
        raise APIError(400, f"The reference audio is {seconds:.1f} s; at least {MIN_REFERENCE_SECONDS:.0f} s "
                            "is needed.", param="files", code="audio_too_short")
    if seconds > MAX_REFERENCE_SECONDS:
        raise APIError(400, f"The reference audio is longer than {MAX_REFERENCE_SECONDS:.0f} s; trim it "
                            "(10-20 s of clear speech works best).", param="files", code="audio_too_long")
    if float(np.sqrt(np.mean(np.square(audio)))) < _SILENT_RMS:
        raise APIError(400, "The reference audio is silent.", param="files", code="invalid_audio")
    return audio


def _labels(raw: str | None) -> dict[str, str]:
    """A flat JSON object of short strings. The Python SDK sends the string "null" for none."""
    if raw in (None, "", "null"):
        return {}
    try:
        labels = parse_json(raw, "labels", 422)
    except APIError as exc:
        raise APIError(422, f"labels must be a JSON object of strings: {exc.message}", param="labels",
                       code="json_invalid") from None
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise APIError(422, "labels must be a JSON object of strings.", param="labels", code="dict_type")
    if len(labels) > MAX_LABELS:
        raise APIError(422, f"labels may hold at most {MAX_LABELS} entries.", param="labels", code="too_long")
    clean = {}
    for key, value in labels.items():
        if isinstance(value, (dict, list)):
            raise APIError(422, f"labels.{key} must be a string, not nested JSON.", param="labels", code="string_type")
        text = "" if value is None else str(value)
        if len(key) > MAX_LABEL_KEY or len(text) > MAX_LABEL_VALUE:
            raise APIError(422, f"label names are at most {MAX_LABEL_KEY} characters and values {MAX_LABEL_VALUE}.",
                           param="labels", code="string_too_long")
        try:
            clean[speakable(key)] = speakable(text)
        except ValueError as exc:
            raise APIError(422, f"labels {exc}.", param="labels", code="value_error") from None
    return clean
