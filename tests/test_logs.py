"""Structured logs: JSON lines with the request fields, rotation, tracebacks, idempotent setup."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask, Response

from sesame_server.engine.engine import Engine
from sesame_server.engine.request import SpeechRequest
from sesame_server.logs import REQUEST_LOGGER, format_human, init_request_log, log_request, note_request, setup_logging
from tests.fakes import FakeBackend, wait_until

REQUEST_FIELDS = ("request_id", "dialect", "route", "voice", "format", "input_length", "streamed", "queue_wait_ms",
                  "ttfa_ms", "generation_ms", "audio_seconds", "status", "interrupted")


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


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
        from flask import g
        g.request_id = "rid-1"
        logging.getLogger("sesame_server.app").error("it broke")
        return "no"

    app.test_client().get("/boom")
    [entry] = lines(tmp_path / "server.log")
    assert (entry["request_id"], entry["method"], entry["path"]) == ("rid-1", "GET", "/boom")


# -- the request hook over a real engine ---------------------------------------------------------
@pytest.fixture
def speech_app(tmp_path):
    setup_logging("INFO", tmp_path / "server.log")
    backend = FakeBackend(frames=4, gated=True)
    engine = Engine(backend, warmup=False).start()
    assert engine.wait_ready(5)
    app = Flask(__name__)
    seen: list[dict] = []
    init_request_log(app, seen.append)

    @app.post("/v1/audio/speech")
    def speak():
        text = "Hello there, how are you today?"
        job = engine.submit(SpeechRequest(text=text, sentences=(text,), voice="fake_voice", request_id="r1",
                                          stream=True))
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
    [entry] = [e for e in lines(log_file) if e["logger"] == REQUEST_LOGGER]
    for field in REQUEST_FIELDS:
        assert field in entry, field
    assert entry["route"] == "/v1/audio/speech" and entry["status"] == 200 and entry["streamed"] is True
    assert entry["audio_seconds"] == pytest.approx(0.32)
    assert entry["ttfa_ms"] >= entry["queue_wait_ms"] >= 0
    assert entry["interrupted"] is False
    assert seen and seen[0]["request_id"] == entry["request_id"]


def test_interrupted_request_says_where_it_stopped(speech_app):
    app, backend, _, log_file = speech_app
    backend.gate.release()  # one frame; the test client reads it before returning the response
    response = app.test_client().post("/v1/audio/speech", buffered=False)
    assert next(iter(response.response))
    response.close()  # the client hung up after the first frame
    wait_until(lambda: any(e["logger"] == REQUEST_LOGGER for e in lines(log_file)))
    [entry] = [e for e in lines(log_file) if e["logger"] == REQUEST_LOGGER]
    assert entry["interrupted"] is True
    assert entry["frame"] == 1 and entry["frames_expected"] >= 1
    assert f"interrupted at frame 1 of ~{entry['frames_expected']}" in entry["message"]


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
