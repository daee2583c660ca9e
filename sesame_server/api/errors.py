"""API errors and their wire shapes, one renderer per dialect."""

from __future__ import annotations

from flask import Response, jsonify

# OpenAI error "type" by status, as the real API and SDKs use them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}

# ElevenLabs "detail.status" codes by status when the raiser gave none.
_ELEVENLABS_STATUS = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "too_many_concurrent_requests",
    503: "system_busy",
}


class APIError(Exception):
    """An error the client caused or should hear about, rendered in the caller's dialect."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def openai_error(error: APIError) -> Response:
    kind = _OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
    response = jsonify({"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}})
    return _finish(response, error)


def elevenlabs_error(error: APIError) -> Response:
    status = error.code or _ELEVENLABS_STATUS.get(error.status, "internal_error" if error.status >= 500 else "invalid_request")
    if error.status == 422:
        body = {"detail": [{"loc": ["body", error.param or "body"], "msg": error.message, "type": status}]}
    else:
        body = {"detail": {"status": status, "message": error.message}}
    return _finish(jsonify(body), error)


def _finish(response: Response, error: APIError) -> Response:
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status == 429 or error.status >= 500:
        # The SDKs honour this: retry 429/5xx, never retry a request we rejected for cause.
        response.headers["x-should-retry"] = "true"
    return response


ELEVENLABS_PREFIXES = ("/v1/text-to-speech", "/v1/voices", "/v2/voices", "/v1/user", "/v1/history")


def dialect_for_path(path: str) -> str:
    return "elevenlabs" if path.startswith(ELEVENLABS_PREFIXES) else "openai"


def render(error: APIError, path: str) -> Response:
    return elevenlabs_error(error) if dialect_for_path(path) == "elevenlabs" else openai_error(error)
