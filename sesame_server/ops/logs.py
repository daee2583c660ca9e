"""Logging setup: JSON lines to a rotating file, human-readable lines on the terminal.

`setup_logging` installs our handlers on the root logger (calling it again replaces them)
and `teardown_logging` removes them. The formatters are here too: `JsonFormatter` for the
file, `format_human` for `sesame-tts service logs` reading that file back.

Log text is untrusted: a voice id or a context id a client sent lands in messages. JSON
escapes it; the human formats (the console, `service logs`) escape every control character
(`escape_control`), so no client can print a line of its own. Tracebacks stay multi-line.
A WebSocket client that stops reading or resets is not a server error: `ExpectedDisconnects`
turns the websockets library's ERROR-with-traceback for it into one INFO line.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

LOG_FILE_NAME = "server.log"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 10 MiB per file ...
DEFAULT_BACKUP_COUNT = 5  # ... and 5 old files: at most ~60 MiB on disk, for months of uptime
FIELDS_ATTR = "sesame_fields"  # a record's structured fields (the request line), merged at top level
# A record whose text is the server's own (the load-failure advice), printed with its line
# breaks: log.error(..., extra={MULTILINE_ATTR: True}). Never for text a client sent.
MULTILINE_ATTR = "_sesame_multiline"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is data.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_OURS = "_sesame"  # marks our handlers, so setup is idempotent and teardown finds them
# Line breaks (\n, \r, \v, \f, NEL, U+2028/9), escape sequences (ESC) and every other C0/C1
# control; a tab stays (it cannot start a line).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r"}
_JSON_RAW_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x7f\x85\u2028\u2029"}
# The websockets library's loggers (the server's protocol logs through "websockets.server").
WEBSOCKET_LOGGERS = ("websockets.server", "websockets.client")


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
    teardown_logging()
    root = logging.getLogger()
    level = level.upper() if isinstance(level, str) else logging.getLevelName(level)
    for name in WEBSOCKET_LOGGERS:
        _install_filter(logging.getLogger(name), ExpectedDisconnects())
    context = _RequestContext()

    console = _StderrHandler()
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


def teardown_logging() -> None:
    """Remove and close the handlers setup_logging installed (others' handlers stay)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()
    for name in WEBSOCKET_LOGGERS:
        target = logging.getLogger(name)
        for ours in [f for f in target.filters if getattr(f, _OURS, False)]:
            target.removeFilter(ours)


def _install_filter(target: logging.Logger, record_filter: logging.Filter) -> None:
    setattr(record_filter, _OURS, True)
    target.addFilter(record_filter)


def _install(root: logging.Logger, handler: logging.Handler, context: logging.Filter) -> None:
    handler.addFilter(context)
    setattr(handler, _OURS, True)
    root.addHandler(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time, not the stream it was when set up:
    a test harness or embedding app that swaps (and later closes) stderr keeps working."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


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
        line = json.dumps(record_dict(record), ensure_ascii=False, default=str, separators=(",", ":"))
        # JSON escapes C0 controls itself; these it leaves raw, and some readers break lines at them.
        return line.translate(_JSON_RAW_BREAKS)


def record_dict(record: logging.LogRecord) -> dict[str, Any]:
    """A LogRecord as the JSON object one line of server.log holds."""
    body: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "thread": record.threadName,
    }
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and not key.startswith("_") and key != FIELDS_ATTR:
            body[key] = value
    fields = getattr(record, FIELDS_ATTR, None)
    if isinstance(fields, Mapping):  # the request line's fields win over the request context
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
    """One line per record on the console: the message (format string and arguments alike)
    with its control characters escaped; a traceback follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        message = record.message if getattr(record, MULTILINE_ATTR, False) else escape_control(record.message)
        return self._fmt % {**vars(record), "message": message,  # type: ignore[operator]
                            "name": escape_control(record.name)}


def format_human(entry: Mapping[str, Any]) -> str:
    """A JSON log entry (as parsed from server.log) as one human line (+ traceback)."""
    ts = str(entry.get("ts", ""))
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        when = ts
    level, logger, message = (escape_control(str(entry.get(key, ""))) for key in ("level", "logger", "message"))
    line = f"{escape_control(when)} {level:<7} {logger}: {message}"
    if entry.get("exc_info"):
        line += "\n" + str(entry["exc_info"])
    return line


def escape_control(text: str) -> str:
    """`text` on one line: control characters as \\n, \\r, \\xNN or \\uNNNN."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


# -- expected disconnects ----------------------------------------------------------------------
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ExpectedDisconnects(logging.Filter):
    """A WebSocket peer that went away (stopped reading, reset, never answered a ping) is
    the client's doing: an ERROR with a traceback from the websockets library for it becomes
    one INFO line saying what happened. Installed on the library's loggers, so a handler's
    level still applies to the INFO it becomes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno > logging.INFO and exc is not None and _is_disconnect(exc):
            record.msg, record.args = f"{record.getMessage()}: the client went away ({_describe(exc)})", None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info, record.exc_text = None, None
        return True


def _is_disconnect(exc: BaseException) -> bool:
    closed = getattr(sys.modules.get("websockets.exceptions"), "ConnectionClosed", None)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _DISCONNECTS) or (closed is not None and isinstance(exc, closed)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
