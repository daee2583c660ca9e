"""Logging setup: JSON lines to a rotating file, human-readable lines on the terminal.

`setup_logging` installs our handlers on the root logger (calling it again replaces them)
and `teardown_logging` removes them. The formatters are here too: `JsonFormatter` for the
file, `format_human` for `sesame-tts service logs` reading that file back.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

LOG_FILE_NAME = "server.log"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 10 MiB per file ...
DEFAULT_BACKUP_COUNT = 5  # ... and 5 old files: at most ~60 MiB on disk, for months of uptime
FIELDS_ATTR = "sesame_fields"  # a record's structured fields (the request line), merged at top level

# Attributes every LogRecord has; anything else on a record came from `extra=` and is data.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_OURS = "_sesame"  # marks our handlers, so setup is idempotent and teardown finds them


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
        return json.dumps(record_dict(record), ensure_ascii=False, default=str, separators=(",", ":"))


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
