"""Logs a client cannot forge or flood: text it sent (a voice id, a context id) never prints a
line of its own on the console or in `sesame-tts service logs`; a WebSocket client that
stops reading or resets is one INFO line, not an ERROR with a traceback."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

import sesame_server.api.websocket as websocket_route
from sesame_server.ops.logs import setup_logging, teardown_logging
from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server
from tests.ws_client import open_socket, send, ws_url

# Line breaks of every kind a terminal, `less` or Python's splitlines() honours: accepted in
# text fields (CR, LF, U+2028) ...
FORGERIES = ["\r\nFORGED crlf", "\nFORGED lf", "\rFORGED cr", "\u2028FORGED ls"]
# ... or refused as control characters (the refusal is logged, with what was refused).
REFUSED = ["\x85FORGED nel", "\x1b[2K\rFORGED ansi"]


def forged_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip("\x1b[2K").startswith("FORGED")]


def service_logs(cache_dir) -> str:
    """What `sesame-tts service logs` prints for this CACHE_DIR."""
    env = {**os.environ, "CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-m", "sesame_server", "service", "logs", "-n", "500"], env=env,
                          cwd=cache_dir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def logged_server(tmp_path):
    """A real server logging as `serve` does: human lines on the console, JSON in server.log."""
    setup_logging("INFO", tmp_path / "server.log", console_level="INFO")
    backend = FakeBackend(frames=50, gated=True)  # each frame waits for backend.gate: generation is as slow as we say
    with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=backend) as server:
        server.cache_dir, server.backend = tmp_path, backend
        yield server


def test_client_text_never_prints_a_line_of_its_own(logged_server, capsys):
    http = logged_server.url.replace("http://", "ws://")
    for forgery in REFUSED:
        dialogue = open_socket(f"{http}/v1/text-to-dialogue/multi-stream-input")
        send(dialogue, inputs=[{"text": "Hello there. ", "voice_id": "abc" + forgery}], context_id="c1")
        assert json.loads(dialogue.recv(timeout=30))["error"] == "invalid_input_message"
        dialogue.close()
    for forgery in FORGERIES:
        dialogue = open_socket(f"{http}/v1/text-to-dialogue/multi-stream-input")
        send(dialogue, inputs=[{"text": "Hello there. ", "voice_id": "abc" + forgery}], context_id="c1")
        assert json.loads(dialogue.recv(timeout=30))["error"] == "voice_not_found"
        dialogue.close()

        contexts = open_socket(ws_url(logged_server.url, "fake_voice"))
        context_id = "ctx" + forgery
        send(contexts, text=" ", context_id=context_id)
        logged_server.backend.started.clear()
        send(contexts, text="Hello there. More", context_id=context_id, flush=True)
        assert logged_server.backend.started.wait(30)
        send(contexts, close_context=True, context_id=context_id)  # mid-generation: logged with its id
        contexts.recv(timeout=30)
        contexts.close()
    time.sleep(0.5)  # the sockets' last lines
    console = capsys.readouterr().err
    assert "ctx\\r\\nFORGED crlf" in console and "abc\\u2028FORGED ls" in console  # said, escaped
    assert forged_lines(console) == []
    viewed = service_logs(logged_server.cache_dir)
    assert "ctx\\nFORGED lf" in viewed
    assert forged_lines(viewed) == []


def raw_websocket(url: str) -> socket.socket:
    """A WebSocket handshake by hand, then nothing: a client that never reads again."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /v1/text-to-speech/fake_voice/multi-stream-input HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


def reset(sock) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_stop_reading_or_reset_are_no_server_errors(logged_server, monkeypatch, capsys):
    monkeypatch.setattr(websocket_route, "PING_SECONDS", 0.2)  # the keepalive gives up in ~0.4 s, not 40
    monkeypatch.setattr(websocket_route, "CLOSE_SECONDS", 0.2)
    for _ in range(10_000):
        logged_server.backend.gate.release()  # generation runs freely
    silent = raw_websocket(logged_server.url)  # never answers a ping, never reads
    streaming = open_socket(ws_url(logged_server.url, "fake_voice"))
    send(streaming, text=" ", context_id="c")
    send(streaming, text="Hello there. " * 20, context_id="c", flush=True)
    streaming.recv(timeout=30)
    reset(streaming.socket)  # mid-stream
    time.sleep(1.5)
    reset(silent)
    time.sleep(0.5)
    console = capsys.readouterr().err
    entries = [json.loads(line) for line in (logged_server.cache_dir / "server.log").read_text().splitlines()]
    socket_lines = [e for e in entries if e["logger"].startswith("websockets")]
    assert any("went away" in e["message"] for e in socket_lines), socket_lines  # said, at INFO
    assert [e for e in entries if e["level"] not in ("DEBUG", "INFO")] == []
    assert not any("exc_info" in e for e in entries)
    assert "Traceback" not in console and "ERROR" not in console


def test_a_library_error_that_is_no_disconnect_stays_an_error(tmp_path):
    setup_logging("INFO", tmp_path / "server.log", console_level="CRITICAL")
    try:
        raise ValueError("a bug in the library")
    except ValueError:
        logging.getLogger("websockets.server").error("unexpected internal error", exc_info=True)
    [entry] = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    assert entry["level"] == "ERROR" and "ValueError: a bug in the library" in entry["exc_info"]


def test_the_load_failure_advice_keeps_its_lines_on_the_console(tmp_path, capsys):
    """The server's own advice (several lines) stays readable; escaping is for client text."""
    from sesame_server.engine.engine import Engine

    class BrokenBackend(FakeBackend):
        def load(self) -> None:
            raise RuntimeError("no weights")

    setup_logging("INFO", log_file=tmp_path / "server.log")
    try:
        engine = Engine(BrokenBackend(), warmup=False,
                        advise=lambda exc: f"The model could not load.\n  Try: sesame-tts download ({exc})")
        engine.start()
        deadline = time.monotonic() + 10
        while engine.status.state != "error" and time.monotonic() < deadline:
            time.sleep(0.02)
        engine.stop()
    finally:
        teardown_logging()
    console = capsys.readouterr().err
    assert "backend failed:\nThe model could not load.\n  Try: sesame-tts download" in console
