"""Operator routes, opt-in: GET /health (liveness), GET /ready (readiness), GET /metrics
(Prometheus), GET / (playground).

The standalone server registers them; a host app that embeds the speech API asks for them
(`init_app(app, ops=True)`). They read only what the inference thread published
(EngineStatus), never the backend itself.
"""

from __future__ import annotations

import time
from functools import lru_cache
from importlib import resources

from flask import Blueprint, Response, jsonify, request

from sesame_server.ops import memory
from sesame_server.runtime import runtime

bp = Blueprint("ops", __name__)

# Nothing inline, nothing from elsewhere, never inside another site's frame.
_PLAYGROUND_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                      "media-src 'self' blob:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                      "form-action 'none'")
_PAGE_HEADERS = {"Content-Security-Policy": _PLAYGROUND_POLICY, "Cache-Control": "no-cache",
                 "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_ASSETS = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8",
           "favicon.svg": "image/svg+xml"}
_HEALTHY = {"ready": "ok", "unloaded": "ok", "error": "error"}
# Liveness fails only where a restart could help: the model failed to load, or the engine stopped.
_DEAD = frozenset({"error", "stopped"})


@bp.get("/health")
def health() -> Response:
    rt = runtime()
    engine = rt.engine
    status = engine.status
    backend = dict(status.backend)
    memory_bytes = backend.pop("memory_bytes", None)
    turns = rt.turns
    context = {"enabled": turns is not None, "turns": len(turns) if turns else 0,
               "bytes": turns.nbytes if turns else 0, "hits": turns.hits if turns else 0,
               "misses": turns.misses if turns else 0}
    avg = status.avg_generation_seconds
    body = {
        "status": _HEALTHY.get(status.state, "loading"),
        "state": status.state,
        "backend": engine.info.name,
        "model": {
            "loaded": bool(backend.pop("loaded", False)),
            "id": backend.pop("model_id", None),
            "memory_gb": None if memory_bytes is None else round(memory_bytes / 1e9, 3),
            "memory_bytes": memory_bytes,
            **backend,
        },
        "process": {"rss_bytes": memory.rss_bytes(), "peak_rss_bytes": memory.peak_rss_bytes()},
        "voices": [voice.id for voice in rt.catalogue],
        "voices_unreadable": [{"voice_id": voice_id, "reason": reason}
                              for voice_id, reason in rt.catalogue.unusable.items()],
        "default_voice": rt.catalogue.default.id,
        "queue_depth": engine.queue_depth,
        "uptime_seconds": round(time.time() - rt.started_at, 1),
        "requests_served": status.requests_served,
        "interruptions": status.interruptions,
        "avg_generation_time_ms": None if avg is None else round(avg * 1000, 1),
        "context_cache_size": context["turns"],
        "context": context,
    }
    if status.load_error is not None:
        body["error"] = status.load_error
    body["node"] = rt.node
    body["draining"] = rt.drain.draining
    # Liveness: 200 while loading too (a probe must not kill a node that is still loading
    # minutes of weights); `status` says ok | loading | error, /ready says whether to send work.
    return jsonify(body), 503 if status.state in _DEAD else 200


@bp.get("/ready")
def ready() -> Response:
    """Readiness, in a balancer's terms: 200 when this node should get requests (loaded and
    warmed, the queue below MAX_QUEUE_DEPTH, not draining); else 503 + Retry-After and why."""
    rt = runtime()
    engine = rt.engine
    state, depth = engine.status.state, engine.queue_depth
    if rt.drain.draining:
        reason = "draining"
    elif state not in ("ready", "unloaded"):
        reason = "error" if state in _DEAD else "loading"
    elif depth >= engine.max_queue_depth:
        reason = "queue_full"
    else:
        reason = None
    body = {"ready": reason is None, "node": rt.node, "state": state, "queue_depth": depth,
            "max_queue_depth": engine.max_queue_depth}
    if reason is None:
        return jsonify(body), 200
    body["reason"] = reason
    return jsonify(body), 503, {"Retry-After": str(engine.retry_after(depth) if reason == "queue_full" else 5)}


@bp.get("/metrics")
def scrape() -> Response:
    body, content_type = runtime().metrics.exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


@lru_cache(maxsize=4)
def _file(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


@bp.get("/")
def playground() -> Response:
    """A page to try the voices in a browser (streams PCM from /v1/audio/speech); loads nothing from elsewhere."""
    return Response(_file("playground.html"), content_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


@bp.get("/<any(playground.js, playground.css, favicon.svg):name>")
def playground_asset(name: str) -> Response:
    return Response(_file(name), content_type=_ASSETS[name], headers=_PAGE_HEADERS)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """What browsers ask for on their own: the same icon (an SVG answers as well as an .ico)."""
    return Response(_file("favicon.svg"), content_type="image/svg+xml", headers=_PAGE_HEADERS)
