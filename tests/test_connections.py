"""Connections nobody uses cannot hold the server: idle or half-sent requests are closed after
a short header timeout, the connection limit is sized for streaming, a stream itself is never
cut, and one address may be held to a number of connections (MAX_CONNECTIONS_PER_CLIENT)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = piper_settings(tmp_path_factory.mktemp("cache"), warmup_on_start=False,
                              header_timeout_seconds=HEADER_TIMEOUT, idle_timeout_seconds=IDLE_TIMEOUT)
    with live_server(settings, backend=FakeBackend(frames=2)) as live:
        yield live


def address(server) -> tuple[str, int]:
    return "127.0.0.1", int(server.url.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server closed `sock` (EOF or reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass  # an answer (408 or the like) may come before the close
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionError:
        return True
    return True


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer with a Content-Length, leaving the connection open."""
    sock.settimeout(10)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_idle_half_sent_requests_do_not_lock_anyone_out(server):
    """The audit's attack: 150 connections that sent only 'GET / ' (waitress's default limit
    was 100 connections, its timeout 120 s: /health hung for minutes)."""
    idle = [socket.create_connection(address(server)) for _ in range(150)]
    try:
        for sock in idle:
            sock.sendall(b"GET / ")
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        started = time.monotonic()
        assert all(closed_by_server(sock, within=HEADER_TIMEOUT + 10) for sock in idle)
        assert time.monotonic() - started >= HEADER_TIMEOUT * 0.5  # not at once: after the timeout
    finally:
        for sock in idle:
            sock.close()
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200


def test_a_trickled_header_is_closed_at_the_header_timeout_despite_the_activity(server):
    """Slowloris: a byte now and then kept waitress's inactivity timer from ever firing."""
    with socket.create_connection(address(server)) as sock:
        sock.settimeout(0.25)
        deadline = time.monotonic() + HEADER_TIMEOUT + 8
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X")
                closed = sock.recv(65536) == b""
            except (TimeoutError, socket.timeout):
                continue
            except (ConnectionError, BrokenPipeError):
                closed = True
        assert closed, "a header that never ends kept its connection"


def test_a_connection_that_never_sends_is_closed_at_the_header_timeout(server):
    with socket.create_connection(address(server)) as sock:
        assert closed_by_server(sock, within=HEADER_TIMEOUT + 8)


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(server):
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT + 0.5)  # past the header timeout: between requests it may wait longer
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # still open
        sock.setblocking(True)
        assert closed_by_server(sock, within=IDLE_TIMEOUT + 8)


def test_a_stream_longer_than_every_timeout_is_not_cut(tmp_path):
    backend = FakeBackend(frames=12, gated=True)
    settings = piper_settings(tmp_path, warmup_on_start=False, header_timeout_seconds=HEADER_TIMEOUT,
                              idle_timeout_seconds=1)

    def frames_slowly() -> None:
        for _ in range(12):
            backend.gate.release()
            time.sleep(0.3)  # 3.6 s in all: longer than both timeouts

    with live_server(settings, backend=backend) as live:
        feeder = threading.Thread(target=frames_slowly, daemon=True)
        feeder.start()
        response = requests.post(f"{live.url}/v1/text-to-speech/fake_voice/stream?output_format=pcm_24000",
                                 json={"text": "A long reply."}, stream=True, timeout=30)
        assert response.status_code == 200
        audio = b"".join(response.iter_content(4096))
        feeder.join()
        assert len(audio) == 12 * 1920 * 2  # every 80 ms frame of 16-bit samples arrived


def test_connections_beyond_the_per_client_limit_are_refused(tmp_path):
    settings = piper_settings(tmp_path, warmup_on_start=False, max_connections_per_client=3,
                              header_timeout_seconds=5.0)
    with live_server(settings, backend=FakeBackend(frames=2)) as live:
        held = [socket.create_connection(address(live)) for _ in range(3)]
        try:
            time.sleep(0.3)  # accepted by the server's loop
            with socket.create_connection(address(live)) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                extra.settimeout(5)
                try:
                    answer = extra.recv(65536)
                except ConnectionResetError:  # closed with our request unread: a reset, not an answer
                    answer = b""
                assert answer == b""  # closed as accepted: no request of its was served
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert requests.get(f"{live.url}/health", timeout=10).status_code == 200
