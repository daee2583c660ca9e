"""OpenAI's wire shapes: the error body and the speech SSE framing."""

from __future__ import annotations

import base64
import json
from typing import Callable, Generator, Iterator

from flask import Response

from sesame_server.api.errors import APIError, error_json
from sesame_server.api.serving import GenerationFailed

# OpenAI error "type" by status, as the real API and SDKs use them.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(error: APIError) -> dict:
    kind = _TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}


def error_response(error: APIError) -> Response:
    return error_json(error_body(error), error)


def _event(body: dict) -> bytes:
    # "data: " with the space: LiveKit requires it.
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def sse_events(chunks: Generator[bytes, None, None], usage: Callable[[], dict]) -> Iterator[bytes]:
    """One speech.audio.delta per audio chunk, then speech.audio.done; a failure mid-stream
    ends the stream with an `error` event instead of done, so the client knows."""
    try:
        for chunk in chunks:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")})
    except GenerationFailed as failed:
        yield _event({"type": "error", **error_body(failed.as_api_error())})
        return
    finally:
        chunks.close()  # closing the audio cancels the job when the client left
    yield _event({"type": "speech.audio.done", "usage": usage()})
