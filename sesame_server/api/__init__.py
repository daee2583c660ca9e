"""The speech API as ONE Flask blueprint: the dialects nested under it, with its own API-key
check, request ids, request log and error handlers. Mounting it on a host app adds routes
and nothing else: the host's 404/500 handlers, its own routes and its `/` are untouched.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from sesame_server.api import dialect, docs, guard, models, ops, spoken_route
from sesame_server.api import elevenlabs as elevenlabs_api
from sesame_server.api import openai as openai_api
from sesame_server.api.errors import APIError
from sesame_server.ops.drain import RETRY_AFTER_SECONDS
from sesame_server.ops.request_log import RequestObserver, init_request_log, note_request
from sesame_server.runtime import request_id, runtime

log = logging.getLogger(__name__)

PARENT = "sesame_tts"
# Open even with API_KEY set: readiness probes and service managers poll /health; browsers
# fetch the icon on their own (it is not secret).
_OPEN_ENDPOINTS = frozenset({f"{PARENT}.ops.health", f"{PARENT}.ops.ready", f"{PARENT}.ops.favicon"})
_PROBES = frozenset({f"{PARENT}.ops.health", f"{PARENT}.ops.ready", f"{PARENT}.ops.scrape"})
# Pages a browser loads by navigation: a missing key gets a Basic challenge, so it asks for it.
_BROWSER_PAGES = frozenset({f"{PARENT}.ops.playground", f"{PARENT}.ops.playground_asset"})
# WebSockets whose key may come in the first message (ElevenLabs' xi_api_key): checked there.
_KEY_IN_FIRST_MESSAGE = frozenset(f"{PARENT}.elevenlabs_stream_input.{name}"
                                  for name in elevenlabs_api.stream_input.KEY_IN_FIRST_MESSAGE)


def speech_blueprint(record: RequestObserver, *, ops_routes: bool = False) -> Blueprint:
    """A fresh parent blueprint (one per app) with every dialect nested; `record` receives
    each finished request's log fields and job (metrics)."""
    parent = Blueprint(PARENT, __name__)
    for child in (openai_api.bp, *elevenlabs_api.blueprints, models.bp, docs.bp, spoken_route.bp):
        parent.register_blueprint(child)
    if ops_routes:
        parent.register_blueprint(ops.bp)
    parent.before_request(_enter)
    parent.after_request(add_request_id)
    parent.after_request(_cors)
    init_request_log(parent, record)
    parent.register_error_handler(APIError, dialect.error_response)
    parent.register_error_handler(HTTPException, http_error)
    parent.register_error_handler(Exception, unexpected_error)
    return parent


def _enter() -> Response | None:
    """Every guard, in order, before any work: what the connection refused, Host, Origin
    (CORS), key, body size."""
    note_request(dialect=dialect.decide())
    settings = runtime().settings
    endpoint = request.endpoint or ""
    guard.check_request_shape()
    guard.check_host(settings)
    g.sesame_cors_origin = guard.check_origin(settings)
    answer = guard.preflight(g.sesame_cors_origin)
    if answer is not None:
        return answer
    if endpoint in _KEY_IN_FIRST_MESSAGE and not guard.given_key():
        g.sesame_key_deferred = True
    elif endpoint not in _OPEN_ENDPOINTS:
        guard.check_key(settings, browser_page=endpoint in _BROWSER_PAGES)
    guard.limit_body(settings, endpoint.rsplit(".", 1)[-1])
    if runtime().drain.draining and endpoint not in _PROBES:
        # Before any work: a balancer retries it on another node (nothing was sent yet).
        raise APIError(503, "This server is shutting down; retry the request (another server will take it).",
                       code="draining", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return None


def guard_unmatched() -> None:
    """The same guards for a request no route matched (the standalone server's 404/405), so
    a caller without the key learns nothing about which routes exist."""
    if request.routing_exception is None or isinstance(request.routing_exception, WebsocketMismatch):
        return  # a route (a WebSocket one asked without Upgrade: its 426): its blueprint's _enter guards it
    settings = runtime().settings
    guard.check_request_shape()
    guard.check_host(settings)
    guard.check_origin(settings)
    guard.check_key(settings, browser_page=False)


def _cors(response: Response) -> Response:
    return guard.cors_headers(response, g.get("sesame_cors_origin"))


def add_request_id(response: Response) -> Response:
    """The request's id, and which server answered (X-Served-By: NODE_NAME or the host name)."""
    rid = request_id()
    response.headers["x-request-id"] = rid
    response.headers["request-id"] = rid
    response.headers["X-Served-By"] = runtime().node
    return response


def http_error(error: HTTPException) -> Response:
    message = error.description or error.name
    if isinstance(error, WebsocketMismatch):  # werkzeug: the route and the request disagree on Upgrade
        return dialect.error_response(_websocket_mismatch())
    if error.code == 404:
        message = f"Unknown route: {request.method} {request.path}"
    elif error.code == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    response = dialect.error_response(APIError(error.code or 500, message))
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _websocket_mismatch() -> APIError:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return APIError(400, f"{request.path} is not a WebSocket endpoint.", code="not_a_websocket")
    # No Upgrade header on the answer: WSGI servers refuse hop-by-hop headers (PEP 3333).
    return APIError(426, f"{request.path} is a WebSocket endpoint: connect with ws:// (Upgrade: websocket).",
                    code="upgrade_required")


def unexpected_error(error: Exception) -> Response:
    log.exception("Unhandled error on %s %s", request.method, request.path)
    return dialect.error_response(
        APIError(500, f"Internal server error ({error.__class__.__name__}); see the server log."))
