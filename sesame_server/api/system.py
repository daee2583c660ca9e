"""System routes: health (readiness) for operators, install scripts and service managers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from sesame_server.failures import describe_startup_failure
from sesame_server.runtime import runtime

bp = Blueprint("system", __name__)


@bp.get("/health")
def health() -> Response:
    rt = runtime()
    engine = rt.engine
    backend_status = engine.backend.status()
    engine_status = engine.status()
    state = engine_status["state"]
    status = {"ready": "ok", "unloaded": "ok", "error": "error"}.get(state, "loading")
    turns = rt.turns
    on = turns is not None
    context = {"enabled": on, "turns": len(turns) if on else 0, "bytes": turns.nbytes if on else 0,
               "hits": turns.hits if on else 0, "misses": turns.misses if on else 0}
    body = {
        "status": status,
        "backend": engine.backend.name,
        "model": {
            "loaded": bool(backend_status.get("loaded")),
            "id": backend_status.get("model_id"),
            "memory_gb": backend_status.get("memory_gb"),
            **{k: v for k, v in backend_status.items() if k not in ("loaded", "model_id", "memory_gb")},
        },
        "voices": [voice.id for voice in rt.catalogue],
        "default_voice": rt.catalogue.default.id,
        "queue_depth": engine_status["queue_depth"],
        "uptime_seconds": engine_status["uptime_seconds"],
        "requests_served": engine_status["requests_served"],
        "interruptions": engine_status["interruptions"],
        "avg_generation_time_ms": engine_status["avg_generation_time_ms"],
        "context_cache_size": context["turns"],
        "context": context,
    }
    if engine.load_error is not None and state == "error":
        body["error"] = describe_startup_failure(engine.load_error, rt.settings)
    return jsonify(body), 200 if status == "ok" else 503
