"""Structured logs: JSON lines with the request fields, rotation, tracebacks, idempotent setup,
and the request log middleware over a real engine."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
import uuid

import pytest
from flask import Blueprint, Flask, Response, g

from sesame_server.engine.engine import Engine
from sesame_server.engine.request import SpeechRequest
from sesame_server.ops.logs import format_human, setup_logging, teardown_logging
from sesame_server.ops.request_log import REQUEST_LOGGER, init_request_log, log_request, note_request
from tests.fakes import FakeBackend

REQUEST_FIELDS = ("request_id", "dialect", "route", "voice", "format", "input_length", "streamed", "queue_wait_ms",
                  "ttfa_ms", "generation_ms", "audio_seconds", "status", "interrupted")


@pytest.fixture(autouse=True)
def restore_logging():
    level = logging.getLogger().level
    yield
    teardown_logging()
    logging.getLogger().setLevel(level)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def request_lines(path) -> list[dict]:
    return [e for e in lines(path) if e["logger"] == REQUEST_LOGGER]


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_sesame", False)]


def test_json_lines_to_the_file_and_human_lines_on_the_console(tmp_path, capsys):
    log_file = tmp_path / "cache" / "server.log"  # the directory does not exist yet
    setup_logging("INFO", log_file, console_level="INFO")
    logging.getLogger("sesame_server.test").info("hello %s", "world", extra={"voice": "joe"})
    logging.getLogger("sesame_server.test").debug("not at INFO")
    [entry] = lines(log_file)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "sesame_server.test"
    assert entry["voice"] == "joe"
    assert entry["ts"].endswith("Z")
    console = capsys.readouterr().err
    assert "INFO" in console and "sesame_server.test: hello world" in console
    assert not console.lstrip().startswith("{")


def test_setup_is_idempotent_and_level_is_honoured(tmp_path):
    setup_logging("INFO", tmp_path / "a.log")
    setup_logging("WARNING", tmp_path / "a.log")
    setup_logging("warning", tmp_path / "a.log")
    assert len(ours()) == 2  # console + file, not six
    assert logging.getLogger().level == logging.WARNING
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert [e["message"] for e in lines(tmp_path / "a.log")] == ["shown"]
    setup_logging("DEBUG")  # the CLI's first call has no file: the file handler goes away
    assert len(ours()) == 1


def test_teardown_removes_only_our_handlers(tmp_path):
    theirs = logging.NullHandler()
    logging.getLogger().addHandler(theirs)
    try:
        setup_logging("INFO", tmp_path / "server.log")
        teardown_logging()
        assert ours() == [] and theirs in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(theirs)


def test_console_follows_stderr_after_it_is_swapped_and_closed(monkeypatch):
    # A test harness (pytest's capture) swaps stderr and closes the old stream: logging must
    # write to the current one, not fail with "I/O operation on closed file".
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO", console_level="INFO")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logging.getLogger("x").info("still heard")
    assert "still heard" in second.getvalue()


def test_console_is_quiet_when_a_service_manager_captures_it(tmp_path, capsys):
    # Not a terminal + a log file: the captured stream only gets warnings (it is not rotated).
    setup_logging("INFO", tmp_path / "server.log")
    logging.getLogger("x").info("file only")
    logging.getLogger("x").warning("both")
    err = capsys.readouterr().err
    assert "both" in err and "file only" not in err
    assert [e["message"] for e in lines(tmp_path / "server.log")] == ["file only", "both"]


def test_json_console(capsys):
    setup_logging("INFO", json_console=True)
    logging.getLogger("x").info("as json")
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["message"] == "as json"


def test_request_line_has_every_field_at_top_level(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    log_request(request_id="abc", dialect="openai", method="POST", route="/v1/audio/speech", voice="joe",
                format="mp3", input_length=42, streamed=True, queue_wait_ms=1.5, ttfa_ms=120.0,
                generation_ms=800.0, audio_seconds=2.1, status=200, interrupted=True, frame=7, frames_expected=30)
    [entry] = lines(tmp_path / "server.log")
    assert entry["logger"] == REQUEST_LOGGER
    for field in REQUEST_FIELDS:
        assert field in entry, field
    assert entry["input_length"] == 42 and entry["streamed"] is True and entry["status"] == 200
    assert "interrupted at frame 7 of ~30" in entry["message"]


def test_health_polls_are_debug_and_server_errors_warn(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    log_request(route="/health", status=200)
    log_request(route="/v1/audio/speech", status=500, error="boom")
    [entry] = lines(tmp_path / "server.log")
    assert entry["level"] == "WARNING" and entry["error"] == "boom"


def test_errors_carry_the_traceback(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")

    def explode():
        raise ValueError("bad frame")

    try:
        explode()
    except ValueError:
        logging.getLogger("sesame_server.engine").exception("Generation failed for request %s", "r1")
    [entry] = lines(tmp_path / "server.log")
    assert entry["level"] == "ERROR"
    assert entry["exc_type"] == "ValueError" and entry["exc_message"] == "bad frame"
    assert entry["exc_info"].startswith("Traceback") and "explode" in entry["exc_info"]
    assert "ValueError: bad frame" in format_human(entry)


def test_rotation_at_a_small_size(tmp_path):
    log_file = tmp_path / "server.log"
    setup_logging("INFO", log_file, max_bytes=2000, backup_count=2)
    for n in range(200):
        logging.getLogger("x").info("line %d %s", n, "x" * 40)
    rotated = sorted(tmp_path.glob("server.log*"))
    assert [p.name for p in rotated] == ["server.log", "server.log.1", "server.log.2"]
    for path in rotated:
        assert path.stat().st_size <= 2000
        assert all(entry["logger"] == "x" for entry in lines(path))  # every line whole and valid
    assert lines(log_file)[-1]["message"].startswith("line 199 ")


def test_errors_inside_a_request_name_the_request(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    app = Flask(__name__)

    @app.get("/boom")
    def boom():
        g.request_id = "rid-1"
        logging.getLogger("sesame_server.app").error("it broke")
        return "no"

    app.test_client().get("/boom")
    [entry] = lines(tmp_path / "server.log")
    assert (entry["request_id"], entry["method"], entry["path"]) == ("rid-1", "GET", "/boom")


# -- the request log over a real engine ------------------------------------------------------------
def _set_request_id() -> None:
    g.request_id = uuid.uuid4().hex  # what the API layer's request_id() does


@pytest.fixture
def speech_app(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    backend = FakeBackend(frames=4, gated=True)
    engine = Engine(backend, warmup=False).start()
    assert engine.wait_ready(5)
    app = Flask(__name__)
    app.before_request(_set_request_id)
    seen: list[tuple[dict, object, bool]] = []  # (fields, job, whether the job was final when observed)

    def observe(fields, job) -> None:
        seen.append((dict(fields), job, job is not None and job.done.is_set()))

    init_request_log(app, observe)

    @app.post("/v1/audio/speech")
    def speak():
        text = "Hello there, how are you today?"
        job = engine.submit(SpeechRequest(text=text, voice="fake_voice", request_id="r1", stream=True))
        note_request(dialect="openai", voice="fake_voice", format="pcm", input_length=len(text), job=job)

        def chunks():
            for block in job.blocks():
                yield block.tobytes()

        return Response(chunks(), content_type="audio/pcm")

    yield app, backend, seen, tmp_path / "server.log"
    engine.stop()


def test_one_line_per_request_with_job_timings(speech_app):
    app, backend, seen, log_file = speech_app
    backend.gate.release(4)
    response = app.test_client().post("/v1/audio/speech")
    assert len(response.get_data()) == 4 * 1920 * 4
    response.close()
    [entry] = request_lines(log_file)
    for field in REQUEST_FIELDS:
        assert field in entry, field
    assert entry["route"] == "/v1/audio/speech" and entry["status"] == 200 and entry["streamed"] is True
    assert entry["dialect"] == "openai"  # noted by the view, not derived from a blueprint name
    assert entry["audio_seconds"] == pytest.approx(0.32)
    assert entry["ttfa_ms"] >= entry["queue_wait_ms"] >= 0
    assert entry["interrupted"] is False
    assert entry["prefill_tokens"] == 7 and entry["context_turns"] == 0
    [(fields, job, done)] = seen
    assert fields["request_id"] == entry["request_id"] and len(entry["request_id"]) == 32
    assert done and job.frames == 4


def test_interrupted_request_waits_for_the_job_and_says_where_it_stopped(speech_app, monkeypatch):
    app, backend, seen, log_file = speech_app
    backend.gate.release()  # one frame; the test client reads it before returning the response
    response = app.test_client().post("/v1/audio/speech", buffered=False)
    assert next(iter(response.response))
    slept: list[str] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(threading.current_thread().name), real_sleep(s)))
    response.close()  # the client hung up after the first frame
    # No waiting here: closing the response blocked on job.done, without sleep-polling.
    assert threading.current_thread().name not in slept
    [entry] = request_lines(log_file)
    assert entry["interrupted"] is True
    assert entry["frame"] == 1 and entry["frames_expected"] >= 1
    assert f"interrupted at frame 1 of ~{entry['frames_expected']}" in entry["message"]
    [(_, job, done)] = seen
    assert done and job.interrupted


def test_error_responses_log_their_message(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    app = Flask(__name__)
    init_request_log(app)

    @app.post("/v1/audio/speech")
    def bad():
        return {"error": {"message": "Unknown voice 'x'", "type": "invalid_request_error"}}, 400

    app.test_client().post("/v1/audio/speech").close()
    [entry] = lines(tmp_path / "server.log")
    assert entry["status"] == 400 and entry["error"] == "Unknown voice 'x'"
    assert entry["dialect"] == "none"


def test_blueprint_and_app_hooks_log_a_request_once(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    api = Blueprint("api", __name__)
    calls: list[str] = []

    @api.get("/v1/voices")
    def voices():
        note_request(dialect="elevenlabs")
        return {"voices": []}

    app = Flask(__name__)
    init_request_log(api, lambda fields, job: calls.append(f"api {fields['route']}"))
    app.register_blueprint(api)
    init_request_log(app, lambda fields, job: calls.append(f"app {fields['route']}"))
    client = app.test_client()
    client.get("/v1/voices").close()  # both hooks run: the blueprint's records it
    client.get("/nowhere").close()  # no blueprint: the app's hook records it
    assert calls == ["api /v1/voices", "app unmatched"]
    entries = request_lines(tmp_path / "server.log")
    assert [(e["route"], e["dialect"], e["status"]) for e in entries] == \
        [("/v1/voices", "elevenlabs", 200), ("unmatched", "none", 404)]


def test_requests_in_one_app_context_are_each_logged(tmp_path):
    # flask.g is shared by every request served while one app context is pushed.
    setup_logging("INFO", tmp_path / "server.log")
    app = Flask(__name__)
    init_request_log(app)

    @app.get("/ping")
    def ping():
        note_request(voice="joe")
        return "pong"

    with app.app_context():
        client = app.test_client()
        client.get("/ping").close()
        client.get("/ping").close()
    assert len(request_lines(tmp_path / "server.log")) == 2


def test_health_polled_while_loading_is_not_a_warning():
    import logging

    from sesame_server.ops.request_log import log_request, request_log

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    request_log.addHandler(handler)
    level = request_log.level
    request_log.setLevel(logging.DEBUG)
    try:
        log_request(route="/health", method="GET", status=503)
        log_request(route="/health", method="GET", status=500)
        log_request(route="/v1/audio/speech", method="POST", status=503)
    finally:
        request_log.removeHandler(handler)
        request_log.setLevel(level)
    assert [r.levelno for r in records] == [logging.DEBUG, logging.WARNING, logging.WARNING]
