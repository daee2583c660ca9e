"""The request log: one structured line per HTTP request (logger "sesame_server.requests").

It carries the request id, dialect, route, voice, format, input length, streaming, queue
wait, time to first audio, generation time, audio seconds, status and where an interrupted
generation stopped. `init_request_log(target)` emits it when the response is closed, i.e.
after the last streamed byte (or the client hanging up), not when the headers leave; then
it hands the same fields and the job to each observer (metrics).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sesame_server.ops.logs import FIELDS_ATTR

if TYPE_CHECKING:
    from sesame_server.engine.job import Job

REQUEST_LOGGER = "sesame_server.requests"
# Polled by scrapers, scripts and service managers: DEBUG, not INFO, also the 503s /health
# answers while the model loads (expected, and `serve` says where it listens); a 500 stays a warning.
QUIET_ROUTES = frozenset({"/health", "/metrics"})
# How long closing a response waits for its job to be final. The inference thread stops
# within one frame of a cancel; a job cancelled while queued is only finalised once it
# reaches the head of the queue, and the line must not wait for that.
JOB_WAIT_SECONDS = 1.0

# Called once per request, after its line is logged, with the line's fields and the job.
RequestObserver = Callable[[Mapping[str, Any], "Job | None"], None]

request_log = logging.getLogger(REQUEST_LOGGER)
log = logging.getLogger(__name__)


# -- the line ------------------------------------------------------------------------------
def log_request(*, level: int | None = None, **fields: Any) -> dict[str, Any]:
    """Emit the one structured line for a finished request; returns the fields logged.

    Fields land at the top level of the JSON line. Known ones (all optional): request_id,
    dialect, method, route, path, voice, format, input_length, streamed, status,
    queue_wait_ms, ttfa_ms, generation_ms, audio_seconds, interrupted, frame,
    frames_expected, context_turns, prefill_tokens (csm), duration_ms, error.
    """
    if level is None:
        status = fields.get("status") or 0
        if fields.get("route") in QUIET_ROUTES and status != 500:
            level = logging.DEBUG
        elif status >= 500:
            level = logging.WARNING
        else:
            level = logging.INFO
    request_log.log(level, "%s", _summary(fields), extra={FIELDS_ATTR: fields})
    return fields


def _summary(f: Mapping[str, Any]) -> str:
    parts = [str(f.get("method") or ""), str(f.get("route") or f.get("path") or ""), str(f.get("status") or "")]
    if f.get("dialect"):
        parts.append(f"[{f['dialect']}]")
    for key, label in (("voice", "voice"), ("format", "format"), ("input_length", "chars")):
        if f.get(key) is not None:
            parts.append(f"{label}={f[key]}")
    if f.get("streamed") is not None:
        parts.append("streamed" if f["streamed"] else "buffered")
    for key, label, unit in (("queue_wait_ms", "wait", "ms"), ("ttfa_ms", "ttfa", "ms"),
                             ("generation_ms", "gen", "ms"), ("audio_seconds", "audio", "s"),
                             ("duration_ms", "total", "ms")):
        if f.get(key) is not None:
            parts.append(f"{label}={f[key]}{unit}")
    if f.get("prefill_tokens") is not None:
        parts.append(f"context={f.get('context_turns', 0)} prefill={f['prefill_tokens']}")
    if f.get("interrupted"):
        parts.append(f"interrupted at frame {f.get('frame', '?')} of ~{f.get('frames_expected', '?')}")
    if f.get("error"):
        parts.append(f"error={f['error']!r}")
    return " ".join(p for p in parts if p)


def job_fields(job: Job, wait: float = JOB_WAIT_SECONDS) -> dict[str, Any]:
    """Timing fields from an engine Job, once it is final (job.done) or `wait` s passed.

    A response closes as soon as the client hangs up, while the inference thread stops
    within one frame after that; waiting on job.done lets the line say where it stopped.
    """
    job.done.wait(wait)

    def ms(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round((end - start) * 1000, 1)

    fields: dict[str, Any] = {
        "queue_wait_ms": ms(job.submitted_at, job.started_at),
        "ttfa_ms": ms(job.submitted_at, job.first_audio_at),
        "generation_ms": ms(job.started_at, job.finished_at),
        "audio_seconds": round(job.audio_seconds, 3),
        "interrupted": bool(job.interrupted or (not job.done.is_set() and job.cancel.is_set())),
    }
    if fields["interrupted"]:
        fields["frame"] = job.frames
        fields["frames_expected"] = job.expected_frames
    if job.prefill_tokens is not None:  # backends that report them (csm)
        fields["context_turns"] = job.context_turns or 0
        fields["prefill_tokens"] = job.prefill_tokens
    if job.error is not None:  # a stream that failed after its 200 went out
        fields["error"] = f"{type(job.error).__name__}: {job.error}"
    return fields


# -- the middleware --------------------------------------------------------------------------
# Per-request state lives in the WSGI environ, not flask.g: g is shared by every request
# served inside one pushed app context (tests, embedding apps), the environ never is.
_FIELDS = "sesame.request_fields"
_STARTED = "sesame.request_started"
_RECORDED = "sesame.request_recorded"


def note_request(**fields: Any) -> None:
    """Add fields to this request's log line (call from a view: voice=, format=,
    input_length=, streamed=, dialect=, and job= once the job is submitted)."""
    from flask import request

    request.environ.setdefault(_FIELDS, {}).update(fields)


def init_request_log(target: Any, *observers: RequestObserver) -> None:
    """Log one line per request handled by `target` (a Flask app or Blueprint), when its
    response is closed, then call each observer with the line's fields and the job.

    Attaching to a blueprint and to its app is fine: whichever after_request hook runs
    first (the blueprint's) records the request, the other one sees it recorded.
    """
    target.before_request(_mark_start)
    target.after_request(lambda response: _defer_record(response, observers))


def _mark_start() -> None:
    from flask import request

    request.environ.setdefault(_STARTED, time.monotonic())


def _defer_record(response: Any, observers: tuple[RequestObserver, ...]) -> Any:
    from flask import g, request

    environ = request.environ
    if environ.get(_RECORDED):
        return response
    environ[_RECORDED] = True
    # The request is read now. The environ and g are kept and read when the response is
    # closed, so fields noted later (other after_request hooks, the stream) still count.
    request_globals = g._get_current_object()  # noqa: SLF001 - werkzeug LocalProxy's documented accessor
    base: dict[str, Any] = {
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule is not None else "unmatched",
        "path": request.path,
        "status": response.status_code,
        "streamed": response.is_streamed,
    }
    if response.status_code >= 400 and not response.is_streamed:
        base["error"] = _error_message(response)

    def finish() -> None:
        _record(environ, request_globals.get("request_id"), base, observers)

    response.call_on_close(finish)
    return response


def _record(environ: Mapping[str, Any], request_id: str | None, base: dict[str, Any],
            observers: tuple[RequestObserver, ...]) -> None:
    fields: dict[str, Any] = {"request_id": request_id, "dialect": "none", **base}
    try:
        noted = dict(environ.get(_FIELDS, {}))
        job = noted.pop("job", None)
        fields.update(noted)
        if job is not None:
            for key, value in job_fields(job).items():
                if key != "error" or not fields.get("error"):  # the response's own message wins
                    fields[key] = value
        started = environ.get(_STARTED)
        if started is not None:
            fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        if fields.get("error") is None:
            fields.pop("error", None)
        log_request(**fields)
        for observer in observers:
            observer(fields, job)
    except Exception:  # noqa: BLE001 - bookkeeping must never break a response
        log.exception("Recording request %s failed", fields.get("request_id"))


def _error_message(response: Any) -> str | None:
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return None
    error = body.get("error") or body.get("detail")  # OpenAI | ElevenLabs shapes
    if isinstance(error, dict):
        return error.get("message")
    return error if isinstance(error, str) else None
