"""ElevenLabs' wire shapes: the error body (422 validation lists) and NDJSON framing."""

from __future__ import annotations

import base64
import json
from typing import Generator, Iterator

from flask import Response

from sesame_server.api.errors import APIError, error_json
from sesame_server.api.serving import GenerationFailed
from sesame_server.engine.alignment import Alignment, CharacterTimeline
from sesame_server.spoken.alignment import SourceTimeline

# "detail.status" codes by HTTP status when the raiser gave none.
_STATUS = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_concurrent_requests",
    503: "system_busy",
}


def error_body(error: APIError) -> dict:
    status = error.code or _STATUS.get(error.status, "internal_error" if error.status >= 500 else "invalid_request")
    if error.status == 422:
        details = error.details or [{"loc": ["body", error.param or "body"], "msg": error.message, "type": status}]
        return {"detail": details}
    return {"detail": {"status": status, "message": error.message}}


def error_response(error: APIError) -> Response:
    return error_json(error_body(error), error)


def _line(body: dict) -> bytes:
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


def _audio_line(audio: bytes, normalized: Alignment, alignment: Alignment) -> bytes:
    return _line({"audio_base64": base64.b64encode(audio).decode("ascii"),
                  "alignment": alignment.as_dict() if alignment else None,
                  "normalized_alignment": normalized.as_dict() if normalized else None})


def ndjson_with_timestamps(chunks: Generator[bytes, None, None], timeline: CharacterTimeline,
                           source: SourceTimeline, seconds_out) -> Iterator[bytes]:
    """One compact object per audio chunk with the characters its audio covers, spoken
    (`normalized_alignment`) and as sent (`alignment`); a failure mid-stream ends with an
    error line in ElevenLabs' shape instead of the last characters."""
    try:
        for chunk in chunks:
            spoken = timeline.advance(seconds_out())
            yield _audio_line(chunk, spoken, source.advance(spoken))
    except GenerationFailed as failed:
        yield _line(error_body(failed.as_api_error()))
        return
    finally:
        chunks.close()
    end = seconds_out()
    rest = timeline.finish(end)
    sent = source.advance(rest).extend(source.finish(end))
    if rest or sent:
        yield _audio_line(b"", rest, sent)
