"""create_app: the standalone server. init_app: the speech API mounted on any Flask app."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from sesame_server.api import add_request_id, guard_unmatched, http_error, speech_blueprint, unexpected_error
from sesame_server.api.dialect import error_response
from sesame_server.api.errors import APIError
from sesame_server.backends.base import Backend
from sesame_server.backends.selection import create_backend
from sesame_server.config import Settings, load_settings
from sesame_server.context.conversation import remember_turns
from sesame_server.context.turn_store import turn_cache
from sesame_server.engine.engine import Engine
from sesame_server.ops.advice import describe_startup_failure
from sesame_server.ops.drain import InFlight
from sesame_server.ops.request_log import init_request_log
from sesame_server.ops.metrics import Metrics
from sesame_server.runtime import EXTENSION, Runtime, node_name
from sesame_server.voices.catalogue import VoiceCatalogue
from sesame_server.voices.custom import CustomVoiceStore
from sesame_server.voices.shared import SharedVoices


def create_app(settings: Settings | None = None, *, backend: Backend | None = None, start: bool = True) -> Flask:
    """The standalone server: the speech API, the operator routes, and JSON answers (in the
    dialect the path suggests) for requests no route matched."""
    app = Flask(__name__)
    rt = init_app(app, settings, backend=backend, start=start, ops=True)
    app.before_request(guard_unmatched)  # the key before "no such route"
    app.register_error_handler(APIError, error_response)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    app.after_request(add_request_id)
    init_request_log(app, rt.metrics.observe_record)  # the lines no blueprint logged (unmatched routes)
    app.wsgi_app = InFlight(app.wsgi_app, rt.drain)  # what a drain (SIGTERM) waits for
    if rt.settings.proxy_hops:
        # Behind a balancer every request comes from it: the client is in X-Forwarded-For
        # (conversation memory is keyed by client when there is no X-Session-Id or key).
        # Trusted only from the configured number of proxies, never by default.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=rt.settings.proxy_hops, x_proto=rt.settings.proxy_hops)
    return app


def init_app(app: Flask, settings: Settings | None = None, *, backend: Backend | None = None,
             start: bool = True, ops: bool = False) -> Runtime:
    """Mount the speech API on `app` (which may be someone else's) and start its engine.

    `ops=True` also serves /health, /metrics and the playground at /."""
    settings = settings or load_settings()
    backend = backend or create_backend(settings)
    engine = Engine(
        backend,
        max_queue_depth=settings.max_queue_depth,
        warmup=settings.warmup_on_start,
        idle_unload_minutes=settings.idle_unload_minutes,
        slow_reader_seconds=settings.slow_reader_seconds,
        advise=lambda exc: describe_startup_failure(exc, settings),
    )
    catalogue = VoiceCatalogue(backend.voices(), settings.default_voice)
    custom_voices = CustomVoiceStore(settings.voices_dir)
    if backend.info.can_clone:  # VOICES_DIR may be shared: other nodes' voices come and go
        SharedVoices(custom_voices, catalogue, rescan_seconds=settings.voices_rescan_seconds,
                     forget=engine.forget_voice).load()
    metrics = Metrics(node=node_name(settings))  # the TTFA histogram's node label
    metrics.watch_engine(engine)  # scrape-time gauges from what the inference thread published
    turns = None
    if settings.context_enabled and settings.context_max_turns > 0 and backend.info.uses_context:
        turns = turn_cache(settings, on_error=metrics.observe_turn_store_error,
                           on_restore=metrics.observe_restored_turns)
    rt = Runtime(settings=settings, engine=engine, catalogue=catalogue, custom_voices=custom_voices,
                 metrics=metrics, turns=turns)
    app.extensions[EXTENSION] = rt
    metrics.watch_count("websockets_open", "Open WebSocket connections (stream-input).", lambda: len(rt.sockets))
    if turns is not None:
        engine.on_job_done.append(remember_turns(turns, metrics.set_context_cache))
    app.register_blueprint(speech_blueprint(metrics.observe_record, ops_routes=ops))
    if start:
        engine.start()
    return rt
