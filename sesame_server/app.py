"""The Flask app factory, and init_app() to mount the speech API on an existing app."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sesame_server.api import account, elevenlabs, elevenlabs_voices, openai, playground, system
from sesame_server.api.errors import APIError, dialect_for_path, render
from sesame_server.backends import Backend, create_backend
from sesame_server.config import Settings, load_settings
from sesame_server.context.conversation import remember_turns
from sesame_server.context.turns import TurnCache
from sesame_server.engine.engine import Engine
from sesame_server.logs import init_request_log, note_request
from sesame_server.metrics import init_metrics
from sesame_server.runtime import EXTENSION, Runtime, request_id
from sesame_server.voices.catalogue import VoiceCatalogue
from sesame_server.voices.custom import CustomVoiceStore

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, backend: Backend | None = None, start: bool = True) -> Flask:
    """A Flask app serving the speech API; settings default to the environment (+ .env)."""
    app = Flask(__name__)
    init_app(app, settings, backend=backend, start=start)
    return app


def init_app(app: Flask, settings: Settings | None = None, *, backend: Backend | None = None,
             start: bool = True) -> Runtime:
    """Register the blueprints and the engine on `app` (which may be someone else's)."""
    settings = settings or load_settings()
    backend = backend or create_backend(settings)
    engine = Engine(
        backend,
        max_queue_depth=settings.max_queue_depth,
        warmup=settings.warmup_on_start,
        idle_unload_minutes=settings.idle_unload_minutes,
    )
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    custom_voices = CustomVoiceStore(settings.voices_dir)
    if getattr(backend, "can_clone", False):
        for voice in custom_voices.list():
            catalogue.add(voice.as_voice())
    turns = None
    if settings.context_enabled and settings.context_max_turns > 0 and getattr(backend, "uses_context", False):
        turns = TurnCache(max_turns=settings.context_max_turns, max_seconds=settings.context_max_seconds)
    rt = Runtime(settings=settings, engine=engine, catalogue=catalogue, custom_voices=custom_voices, turns=turns)
    app.extensions[EXTENSION] = rt
    for blueprint in (openai.bp, elevenlabs.bp, elevenlabs_voices.bp, account.bp, system.bp, playground.bp):
        app.register_blueprint(blueprint)
    app.before_request(_check_api_key)
    app.before_request(_note_dialect)
    app.after_request(_add_request_id)
    metrics = init_metrics(app, engine)  # GET /metrics, engine gauges, per-job observations
    init_request_log(app, metrics.observe_record)  # one JSON line per request
    if turns is not None:
        engine.on_job_done.append(remember_turns(turns, metrics.set_context_cache))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(Exception, _unexpected_error)
    if start:
        engine.start()
    return rt


_API_PREFIXES = ("/v1/", "/v2/")


def _check_api_key() -> None:
    """With API_KEY set, every API route wants it as xi-api-key or Authorization: Bearer."""
    expected = _settings().api_key
    if not expected or not request.path.startswith(_API_PREFIXES):
        return
    given = request.headers.get("xi-api-key", "")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and not given:
        given = token.strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise APIError(401, "Invalid or missing API key: send it as 'xi-api-key' or 'Authorization: Bearer'.",
                       code="invalid_api_key")


def _note_dialect() -> None:
    if request.path.startswith(_API_PREFIXES):
        note_request(dialect=dialect_for_path(request.path))


def _settings() -> Settings:
    from flask import current_app

    return current_app.extensions[EXTENSION].settings


def _add_request_id(response: Response) -> Response:
    rid = request_id()
    response.headers["x-request-id"] = rid
    response.headers["request-id"] = rid
    return response


def _api_error(error: APIError) -> Response:
    return render(error, request.path)


def _http_error(error: HTTPException) -> Response:
    message = error.description or error.name
    if error.code == 404:
        message = f"Unknown route: {request.method} {request.path}"
    elif error.code == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    return render(APIError(error.code or 500, message), request.path)


def _unexpected_error(error: Exception) -> Response:
    log.exception("Unhandled error on %s %s", request.method, request.path)
    return render(APIError(500, f"Internal server error ({error.__class__.__name__}); see the server log."), request.path)
