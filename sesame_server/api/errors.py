"""APIError: an error the client caused or should hear about, rendered in the caller's dialect."""

from __future__ import annotations

from flask import Response, jsonify


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        # Validation failures, one per bad field: {"loc": [...], "msg": str, "type": str}
        # (ElevenLabs renders them as its 422 list; OpenAI reports the first).
        self.details = details or []


_RETRYABLE = frozenset({429, 500, 502, 503, 504})


def error_json(body: dict, error: APIError) -> Response:
    """`body` (a dialect's rendering of `error`) with its status and headers."""
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers)
    # The SDKs honour this: retry what may pass later, never a request we rejected for cause
    # (nor a full disk: 507).
    response.headers["x-should-retry"] = "true" if error.status in _RETRYABLE else "false"
    return response
