"""POST /v1/voices/add, the upload: every field checked before anything is stored."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from werkzeug.datastructures import FileStorage, MultiDict

from sesame_server.api.errors import APIError
from sesame_server.audio.decode import UndecodableAudio, decode_audio
from sesame_server.audio.units import SAMPLE_RATE

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MIN_REFERENCE_SECONDS, MAX_REFERENCE_SECONDS = 1.0, 30.0
MAX_NAME_LENGTH = 100
_SILENT_RMS = 1e-4


@dataclass(frozen=True)
class VoiceUpload:
    name: str
    audio: np.ndarray  # mono float32 at SAMPLE_RATE
    transcript: str
    description: str
    labels: dict[str, str]


def read_upload(form: MultiDict, files: list[FileStorage]) -> VoiceUpload:
    name = (form.get("name") or "").strip()
    if not name:
        raise APIError(422, "Field required: 'name'.", param="name", code="missing")
    if len(name) > MAX_NAME_LENGTH:
        raise APIError(400, f"name must be at most {MAX_NAME_LENGTH} characters.", param="name", code="invalid_name")
    if not files:
        raise APIError(422, "Field required: 'files' (one or more audio files).", param="files", code="missing")
    labels = _labels(form.get("labels"))
    return VoiceUpload(name=name, audio=_reference_audio(files), transcript=(form.get("transcript") or "").strip(),
                       description=(form.get("description") or "").strip(), labels=labels)


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
