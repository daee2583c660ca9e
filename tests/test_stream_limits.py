"""No WebSocket caller holds the server (issue #22, item 1): every piece it hands the engine
is at most MAX_INPUT_LENGTH characters, the text it may leave waiting is capped per context
and per socket, and a client that stops reading is closed instead of growing the server.

Real server on an ephemeral port, a plain `websockets` client, the fake backend (gated where
the test decides when audio is produced)."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sesame_server.config import Settings
from sesame_server.engine.job import MAX_UNREAD_SECONDS
from tests.fakes import FakeBackend, wait_until
from tests.live import live_server
from tests.ws_client import open_socket, read_until_final, send, ws_url

SENTENCE = "the quick brown fox jumps over the lazy dog again. "  # 51 characters, said as written
IN_BETWEEN = "An answer in between."


def _settings(tmp_path, **changes) -> Settings:
    return Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4, max_input_length=100,
                    ws_max_context_chars=1000, ws_max_socket_chars=1500).replace(**changes)


@pytest.fixture()
def small(tmp_path):
    backend = FakeBackend(frames=3, gated=True)
    with live_server(_settings(tmp_path), backend=backend) as server:
        yield server, backend


def test_a_long_message_becomes_bounded_pieces_and_http_is_served_between_them(small):
    server, backend = small
    text = SENTENCE * 12  # 612 characters in one message, MAX_INPUT_LENGTH=100
    answers: list[requests.Response] = []
    with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
        send(ws, text=text, context_id="c")
        wait_until(backend.started.is_set)  # the first piece is being spoken
        http = threading.Thread(target=lambda: answers.append(requests.post(
            f"{server.url}/v1/text-to-speech/fake_voice/stream?output_format=pcm_24000", json={"text": IN_BETWEEN},
            timeout=60)))
        http.start()
        wait_until(lambda: server.engine.queue_depth == 1)  # the HTTP request waits for the engine
        backend.gate.release(1000)
        send(ws, text="", context_id="c", flush=True)
        send(ws, context_id="c", close_context=True)
        read_until_final(ws, {"c"})
    http.join(60)
    assert answers and answers[0].status_code == 200 and len(answers[0].content) == 3 * 1920 * 2
    texts = [request.text for request in backend.requests]
    pieces = [t for t in texts if t != IN_BETWEEN]
    assert len(pieces) >= 6 and all(len(piece) <= 100 for piece in pieces), pieces
    assert " ".join(pieces).split() == text.split()  # in order, nothing lost
    assert texts.index(IN_BETWEEN) == 1  # right after the piece that was speaking, not after all of them


def _refused(url: str, *messages: dict) -> tuple[dict, int]:
    with open_socket(url) as ws:
        for message in messages:
            ws.send(json.dumps(message))
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    return error, closed.value.rcvd.code


def _dialogue_url(http_url: str) -> str:
    return f"{http_url.replace('http://', 'ws://')}/v1/text-to-dialogue/multi-stream-input?output_format=pcm_24000"


def _line(text: str, context_id: str, dialogue: bool) -> dict:
    if dialogue:
        return {"inputs": [{"text": text, "voice_id": "fake_voice"}], "context_id": context_id}
    return {"text": text, "context_id": context_id}


@pytest.mark.parametrize("dialogue", [False, True], ids=["text-to-speech", "text-to-dialogue"])
def test_text_beyond_the_context_cap_is_refused(small, dialogue):
    """WS_MAX_CONTEXT_CHARS=1000: nothing is spoken yet (the backend waits), so 1200
    characters are waiting when the third message comes."""
    server, backend = small
    url = _dialogue_url(server.url) if dialogue else ws_url(server.url, "fake_voice", "output_format=pcm_24000")
    body, code = _refused(url, *[_line(SENTENCE * 8, "c", dialogue) for _ in range(3)])
    assert (body["error"], body["code"], code) == ("max_character_limit_exceeded", 1008, 1008)
    assert body[("context_id" if dialogue else "contextId")] == "c" and "1000" in body["message"]
    backend.gate.release(1000)
    assert requests.get(f"{server.url}/health").status_code == 200


def test_text_beyond_the_socket_cap_is_refused(small):
    """WS_MAX_SOCKET_CHARS=1500: two contexts under their own cap, over the socket's together."""
    server, _ = small
    url = ws_url(server.url, "fake_voice", "output_format=pcm_24000")
    body, code = _refused(url, _line(SENTENCE * 16, "a", False), _line(SENTENCE * 16, "b", False))
    assert (body["error"], body["code"], code) == ("max_character_limit_exceeded", 1008, 1008)
    assert body["contextId"] == "b" and "1500" in body["message"]


def test_text_that_was_spoken_no_longer_counts(small):
    """Four contexts of 816 characters one after the other: 3264 in all, never 1500 at once."""
    server, backend = small
    backend.gate.release(100_000)
    with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
        for turn in range(4):
            send(ws, text=SENTENCE * 16, context_id=f"c{turn}")
            send(ws, text="", context_id=f"c{turn}", flush=True)
            send(ws, context_id=f"c{turn}", close_context=True)
            read_until_final(ws, {f"c{turn}"})


def _never_reading_socket(url: str):
    """A client whose receive window stays small and whose application never calls recv()."""
    parts = urlsplit(url)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # before connect: the window it offers
    raw.connect((parts.hostname, parts.port))
    return connect(url, sock=raw, open_timeout=30, close_timeout=1, max_size=None, max_queue=4)


def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded(tmp_path):
    backend = FakeBackend(frames=5000)  # 400 s of audio, produced as fast as the loop goes
    settings = _settings(tmp_path, slow_reader_seconds=1.0, max_input_length=4096)
    with live_server(settings, backend=backend) as server:
        sockets = server.app.extensions["sesame_tts"].sockets
        unread = [0]
        watching = threading.Event()

        def watch() -> None:  # the most audio the engine ever held undelivered for the piece
            while not watching.is_set():
                job = server.engine.current
                if job is not None:
                    unread[0] = max(unread[0], job.results.qsize())
                time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            with _never_reading_socket(ws_url(server.url, "fake_voice", "output_format=pcm_48000")) as ws:
                send(ws, text="Speak for a very long time. ", context_id="c", flush=True)
                wait_until(lambda: backend.served, timeout=10)
                wait_until(lambda: len(sockets) == 0, timeout=30)  # closed by the server
                job = server.job(backend.served[0])
        finally:
            watching.set()
        budget = MAX_UNREAD_SECONDS / backend.info.frame_seconds
        assert unread[0] <= budget + 2, unread[0]
        assert job.frames < backend.frames / 2, job.frames  # generation paused, then was cut
        backend.frames = 2
        answer = requests.post(f"{server.url}/v1/text-to-speech/fake_voice?output_format=pcm_24000",
                               json={"text": "The engine moved on."}, timeout=30)
        assert answer.status_code == 200 and len(answer.content) == 2 * 1920 * 2


@pytest.mark.parametrize("key, value", [("WS_MAX_CONTEXT_CHARS", "0"), ("WS_MAX_SOCKET_CHARS", "many"),
                                        ("SLOW_READER_SECONDS", "0")])
def test_bad_limits_name_their_key(key, value):
    from sesame_server.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match=key):
        load_settings({key: value}, env_file=None)
