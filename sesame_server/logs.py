"""Logging: JSON lines to a rotating file, human-readable lines on the terminal.

One structured record per HTTP request (logger "sesame_server.requests") carries the
request id, dialect, route, voice, format, input length, streaming, queue wait, time to
first audio, generation time, audio seconds, status and where an interrupted generation
stopped. `init_request_log(app)` emits it when the response is closed, i.e. after the last
streamed byte (or the client hanging up), not when the headers leave.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

REQUEST_LOGGER = "sesame_server.requests"
LOG_FILE_NAME = "server.log"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 10 MiB per file ...
DEFAULT_BACKUP_COUNT = 5  # ... and 5 old files: at most ~60 MiB on disk, for months of uptime
QUIET_ROUTES = frozenset({"/health", "/metrics"})  # polled by scrapers and scripts: DEBUG, not INFO
_G_FIELDS = "sesame_request_fields"
_G_STARTED = "sesame_request_started"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is data.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

request_log = logging.getLogger(REQUEST_LOGGER)


# -- setup ---------------------------------------------------------------------------------
def setup_logging(
    level: str = "INFO",
    log_file: Path | None = None,
    *,
    json_console: bool = False,
    console_level: str | int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backup_count: int = DEFAULT_BACKUP_COUNT,
) -> None:
    """Install our handlers on the root logger; calling again replaces them (idempotent).

    `log_file` gets JSON lines with size-based rotation. The console (stderr) gets human
    lines, or JSON with `json_console`. When stderr is not a terminal and a log file is
    kept (a service manager capturing output), the console only gets warnings and up by
    default, so the captured, unrotated file cannot grow without bound.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_sesame", False)]:
        root.removeHandler(handler)
        handler.close()
    level = level.upper() if isinstance(level, str) else logging.getLevelName(level)
    context = _RequestContext()

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(JsonFormatter() if json_console else HumanFormatter())
    if console_level is None and log_file is not None and not _isatty(sys.stderr):
        console_level = max(logging.getLevelName(level), logging.WARNING)
    console.setLevel(console_level or level)
    _install(root, console, context)

    if log_file is not None:
        try:
            log_file = Path(log_file).expanduser()
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        except OSError as exc:  # logging must never stop the server from starting
            root.setLevel(level)
            logging.getLogger(__name__).warning("Cannot write the log file %s (%s); logging to stderr only.",
                                                log_file, exc)
            return
        file_handler.setFormatter(JsonFormatter())
        file_handler.setLevel(level)
        _install(root, file_handler, context)
    root.setLevel(level)


def _install(root: logging.Logger, handler: logging.Handler, context: logging.Filter) -> None:
    handler.addFilter(context)
    handler._sesame = True  # noqa: SLF001 - marks our handlers so setup is idempotent
    root.addHandler(handler)


def _isatty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _RequestContext(logging.Filter):
    """Adds request id, method and path to records logged while a Flask request is handled,
    so an error logged deep inside a handler still says which request it belonged to."""

    def filter(self, record: logging.LogRecord) -> bool:
        flask = sys.modules.get("flask")  # not imported yet → certainly no request context
        if flask is not None and flask.has_request_context() and not hasattr(record, "request_id"):
            record.request_id = flask.g.get("request_id")
            record.method = flask.request.method
            record.path = flask.request.path
        return True


# -- formatters ----------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then every extra field at
    top level; `exc_info` holds the full traceback text when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_dict(record), ensure_ascii=False, default=str, separators=(",", ":"))


def record_dict(record: logging.LogRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "thread": record.threadName,
    }
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_") and key != "sesame_fields":
            body[key] = value
    fields = getattr(record, "sesame_fields", None)
    if isinstance(fields, Mapping):  # log_request's fields win over the request context
        body.update(fields)
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, _ = record.exc_info
        body["exc_type"] = exc_type.__name__
        body["exc_message"] = str(exc)
        body["exc_info"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        body["exc_info"] = record.exc_text
    if record.stack_info:
        body["stack_info"] = record.stack_info
    return body


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")


def format_human(entry: Mapping[str, Any]) -> str:
    """A JSON log entry (as parsed from server.log) as one human line (+ traceback)."""
    ts = str(entry.get("ts", ""))
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        when = ts
    line = f"{when} {entry.get('level', ''):<7} {entry.get('logger', '')}: {entry.get('message', '')}"
    if entry.get("exc_info"):
        line += "\n" + str(entry["exc_info"])
    return line


# -- the per-request record ----------------------------------------------------------------
def log_request(*, level: int | None = None, **fields: Any) -> dict[str, Any]:
    """Emit the one structured line for a finished request; returns the fields logged.

    Fields land at the top level of the JSON line. Known ones (all optional): request_id,
    dialect, method, route, path, voice, format, input_length, streamed, status,
    queue_wait_ms, ttfa_ms, generation_ms, audio_seconds, interrupted, frame,
    frames_expected, context_turns, prefill_tokens (csm), duration_ms, error.
    """
    if level is None:
        status = fields.get("status") or 0
        if fields.get("route") in QUIET_ROUTES and status < 400:
            level = logging.DEBUG
        elif status >= 500:
            level = logging.WARNING
        else:
            level = logging.INFO
    request_log.log(level, "%s", _summary(fields), extra={"sesame_fields": fields})
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


def job_fields(job: Any, wait: float = 1.0) -> dict[str, Any]:
    """Timing fields from an engine Job, waiting up to `wait` s for it to finish.

    A response closes as soon as the client hangs up, while the inference thread stops
    within one frame after that; the short wait lets the line say where it stopped.
    """
    deadline = time.monotonic() + wait
    while job.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.01)

    def ms(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round((end - start) * 1000, 1)

    fields: dict[str, Any] = {
        "queue_wait_ms": ms(job.submitted_at, job.started_at),
        "ttfa_ms": ms(job.submitted_at, job.first_audio_at),
        "generation_ms": ms(job.started_at, job.finished_at),
        "audio_seconds": round(job.audio_seconds, 3),
        "interrupted": bool(job.interrupted or (job.finished_at is None and job.cancel.is_set())),
    }
    if fields["interrupted"]:
        fields["frame"] = job.frames
        fields["frames_expected"] = job.expected_frames
    if getattr(job, "first_prefill_tokens", None) is not None:  # backends that report them (csm)
        fields["context_turns"] = job.context_turns or 0
        fields["prefill_tokens"] = job.first_prefill_tokens
    return fields


def note_request(**fields: Any) -> None:
    """Add fields to this request's log line (call from a view: voice=, format=,
    input_length=, streamed=, dialect=, and job= once the job is submitted)."""
    from flask import g

    g.setdefault(_G_FIELDS, {}).update(fields)


def init_request_log(app: Any, *observers: Callable[[dict[str, Any]], None]) -> None:
    """Log one line per request on `app`, when its response is closed, then pass the same
    fields to each observer (e.g. Metrics.observe_record)."""
    app.before_request(_mark_start)
    app.after_request(lambda response: _defer_record(response, observers))


def _mark_start() -> None:
    from flask import g

    setattr(g, _G_STARTED, time.monotonic())


def _defer_record(response: Any, observers: tuple[Callable[[dict[str, Any]], None], ...]) -> Any:
    # Everything that needs the request context is read now; the rest when the response
    # is closed (waitress closes it after the last byte, or when the client is gone).
    from flask import g, request

    from sesame_server.runtime import request_id

    noted = dict(g.get(_G_FIELDS, {}))
    job = noted.pop("job", None)
    fields: dict[str, Any] = {
        "request_id": request_id(),
        "dialect": request.blueprint or "none",
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule is not None else "unmatched",
        "path": request.path,
        "status": response.status_code,
        "streamed": response.is_streamed,
        **noted,
    }
    if response.status_code >= 400 and not response.is_streamed:
        fields.setdefault("error", _error_message(response))
    started = g.get(_G_STARTED)

    def finish() -> None:
        if job is not None:
            fields.update(job_fields(job))
        if started is not None:
            fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        try:
            log_request(**fields)
            for observer in observers:
                observer(fields)
        except Exception:  # noqa: BLE001 - bookkeeping must never break a response
            logging.getLogger(__name__).exception("Recording request %s failed", fields.get("request_id"))

    response.call_on_close(finish)
    return response


def _error_message(response: Any) -> str | None:
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return None
    error = body.get("error") or body.get("detail")  # OpenAI | ElevenLabs shapes
    if isinstance(error, dict):
        return error.get("message")
    return error if isinstance(error, str) else None
