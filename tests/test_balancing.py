"""What a load balancer needs from one node: its name on every response, liveness vs
readiness in status codes, and a drain on SIGTERM that finishes what is in flight and
refuses the rest in the caller's dialect (so a balancer retries it elsewhere)."""

from __future__ import annotations

import threading
import time

import openai
import pytest
import requests

from sesame_server.config import Settings
from tests.fakes import FakeBackend, wait_until
from tests.live import live_server, wait_ready


@pytest.fixture
def gated(tmp_path):
    backend = FakeBackend(frames=6, gated=True)
    settings = Settings(cache_dir=tmp_path, node_name="node-a", warmup_on_start=False, max_queue_depth=1)
    with live_server(settings, backend=backend) as server:
        yield server, backend


def _release_all(backend: FakeBackend, frames: int = 6) -> None:
    for _ in range(frames):
        backend.gate.release()


def test_every_response_names_its_node(gated):
    server, backend = gated
    for path in ("/health", "/ready", "/metrics", "/v1/models", "/no/such/route"):
        assert requests.get(f"{server.url}{path}").headers["X-Served-By"] == "node-a", path
    _release_all(backend)
    response = requests.post(f"{server.url}/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy"})
    assert response.status_code == 200 and response.headers["X-Served-By"] == "node-a"


def test_ready_says_when_to_send_work_and_health_only_whether_alive(gated):
    server, backend = gated
    ready = requests.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "node": "node-a", "state": "ready",
                                                         "queue_depth": 0, "max_queue_depth": 1}
    # One generating (held by the gate), one waiting: the queue is at its limit.
    first = threading.Thread(target=requests.post, args=(f"{server.url}/v1/audio/speech",),
                             kwargs={"json": {"model": "tts-1", "input": "One.", "voice": "alloy"}})
    second = threading.Thread(target=requests.post, args=(f"{server.url}/v1/audio/speech",),
                              kwargs={"json": {"model": "tts-1", "input": "Two.", "voice": "alloy"}})
    first.start()
    wait_until(backend.started.is_set)
    second.start()
    wait_until(lambda: server.engine.queue_depth == 1)
    full = requests.get(f"{server.url}/ready")
    assert full.status_code == 503 and full.json()["reason"] == "queue_full"
    assert int(full.headers["Retry-After"]) >= 1
    health = requests.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"  # alive: never restart a busy node
    _release_all(backend, 12)
    first.join(10)
    second.join(10)
    assert requests.get(f"{server.url}/ready").status_code == 200


def test_health_is_alive_while_loading_and_ready_is_not(tmp_path):
    from sesame_server.app import create_app
    from sesame_server.runtime import EXTENSION

    release = threading.Event()

    class SlowLoad(FakeBackend):
        def load(self) -> None:
            release.wait(10)
            super().load()

    app = create_app(Settings(cache_dir=tmp_path, warmup_on_start=False), backend=SlowLoad())
    client = app.test_client()
    try:
        wait_until(lambda: app.extensions[EXTENSION].engine.status.state == "loading")
        health = client.get("/health")
        assert health.status_code == 200 and health.json["status"] == "loading"
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json["reason"] == "loading" and ready.headers["Retry-After"]
    finally:
        release.set()
        app.extensions[EXTENSION].close()


def test_a_draining_node_finishes_its_stream_and_refuses_new_work_in_each_dialect(gated):
    server, backend = gated
    rt = server.app.extensions["sesame_tts"]
    received = {}

    def stream() -> None:
        with requests.post(f"{server.url}/v1/audio/speech", stream=True, json={
                "model": "tts-1", "input": "A long answer.", "voice": "alloy", "response_format": "pcm"}) as response:
            received["status"] = response.status_code
            received["bytes"] = sum(len(chunk) for chunk in response.iter_content(None))

    streaming = threading.Thread(target=stream)
    streaming.start()
    wait_until(backend.started.is_set)
    backend.gate.release()  # one frame out: the stream is in flight
    wait_until(lambda: rt.drain.in_flight == 1)
    rt.drain.begin()

    assert requests.get(f"{server.url}/ready").json()["reason"] == "draining"
    assert requests.get(f"{server.url}/health").status_code == 200
    refused = requests.post(f"{server.url}/v1/audio/speech", json={"model": "tts-1", "input": "New.", "voice": "alloy"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert refused.headers["Retry-After"] and refused.headers["X-Served-By"] == "node-a"
    eleven = requests.post(f"{server.url}/v1/text-to-speech/JoeEmbeddedPiper", json={"text": "New."})
    assert eleven.status_code == 503 and eleven.json()["detail"]["status"] == "draining"
    with pytest.raises(openai.APIStatusError) as info:  # the SDK sees a retryable server error
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0).audio.speech.create(
            model="tts-1", voice="alloy", input="New.")
    assert info.value.status_code == 503

    assert not rt.drain.wait(0.2)  # the stream is still going: the drain waits for it
    _release_all(backend, 5)
    streaming.join(10)
    assert received == {"status": 200, "bytes": 6 * 1920 * 2}  # every frame, nothing cut
    started = time.monotonic()
    assert rt.drain.wait(5) and time.monotonic() - started < 1


def test_sigterm_drains_a_real_server_without_cutting_its_stream(tmp_path):
    """`sesame-tts serve` (Piper) gets SIGTERM while a client is slowly reading a long stream:
    the stream arrives whole, a new request meanwhile gets 503 + Retry-After, and the
    process exits 0 once the stream is done."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from tests.audio_check import decode

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CACHE_DIR": str(tmp_path), "WARMUP_ON_START": "false", "BACKEND": "piper",
           "NODE_NAME": "node-b", "DRAIN_SECONDS": "60"}
    server = subprocess.Popen([sys.executable, "-m", "sesame_server", "--env-file", "/dev/null", "serve", "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        text = " ".join(["This sentence keeps the stream going for a good while."] * 40)
        with requests.post(f"{url}/v1/audio/speech", stream=True, timeout=120, json={
                "model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"}) as response:
            assert response.headers["X-Served-By"] == "node-b"
            chunks = response.iter_content(4096)
            data = [next(chunks)]
            server.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while requests.get(f"{url}/ready", timeout=5).status_code != 503:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            refused = requests.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi."})
            assert refused.status_code == 503 and refused.headers["Retry-After"]
            assert server.poll() is None  # still serving the stream
            data.extend(chunks)
        audio = decode(b"".join(data), "wav")
        assert audio.seconds > 20 and audio.rms > 0.01  # whole: the WAV decodes to its end
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0, err[-2000:]
        assert "stopped (SIGTERM)" in out and "Traceback" not in err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_client_address_comes_from_the_balancer_only_when_told(tmp_path):
    """Conversation memory falls back to the client address: behind a balancer that is
    X-Forwarded-For's, but only with PROXY_HOPS set (else any client could claim any address)."""
    from sesame_server.app import create_app
    from sesame_server.runtime import EXTENSION

    seen = {}
    for hops in (0, 1):
        app = create_app(Settings(cache_dir=tmp_path, warmup_on_start=False, proxy_hops=hops), backend=FakeBackend())

        @app.get("/whoami")
        def whoami():
            from flask import request
            return {"address": request.remote_addr}

        try:
            seen[hops] = app.test_client().get("/whoami", headers={"X-Forwarded-For": "203.0.113.7"},
                                               environ_base={"REMOTE_ADDR": "127.0.0.1"}).json["address"]
        finally:
            app.extensions[EXTENSION].close()
    assert seen == {0: "127.0.0.1", 1: "203.0.113.7"}
