"""The OpenAI dialect end to end: real server, the official openai SDK, audio decoded back."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import openai
import pytest
import requests

from sesame_server.audio.formats import openai_format
from tests.audio_check import assert_speech, decode
from tests.fakes import FakeBackend, wait_until

TEXT = "Hello from the local speech server. It speaks without the cloud."
LONG_TEXT = " ".join(f"This is sentence number {n} of a long story that keeps going." for n in range(1, 41))
# Rates the decoder reports: Opus always decodes at 48 kHz whatever it was fed.
DECODED_RATE = {"opus": 48000}


@pytest.fixture(scope="module")
def client(piper_server):
    return openai.OpenAI(base_url=f"{piper_server.url}/v1", api_key="local", max_retries=0)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format_decodes_to_the_generated_speech(piper_server, client, response_format):
    response = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=response_format)
    fmt = openai_format(response_format)
    assert response.headers["content-type"] == fmt.content_type
    job = piper_server.job(response.headers["x-request-id"])
    decoded = decode(response.content, fmt.container, fmt.sample_rate)
    assert_speech(decoded, sample_rate=DECODED_RATE.get(response_format, 24000), seconds=job.audio_seconds)


def test_default_format_is_mp3_and_voice_object_form_works(piper_server, client):
    response = client.audio.speech.with_raw_response.create(model="gpt-4o-mini-tts", voice={"id": "joe"}, input=TEXT)
    assert response.headers["content-type"] == "audio/mpeg"
    assert decode(response.content, "mp3").rms > 0.01


def test_home_assistant_setup_check_gets_a_valid_file(piper_server, client, caplog):
    """Home Assistant's openai_tts check posts input "."; the answer must be a real (short) mp3."""
    response = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=".")
    assert response.headers["content-type"] == "audio/mpeg"
    assert 0.05 < decode(response.content, "mp3").seconds < 0.2
    assert "Streaming failed" not in caplog.text


def test_speed_changes_duration(piper_server, client):
    durations = {}
    for speed in (0.5, 2.0):
        response = client.audio.speech.with_raw_response.create(
            model="tts-1", voice="joe", input=TEXT, response_format="pcm", speed=speed)
        durations[speed] = decode(response.content, "pcm").seconds
    # 4x nominal; pauses between sentences do not scale fully
    assert durations[0.5] > 2.2 * durations[2.0]


def test_streaming_delivers_first_bytes_before_generation_finishes(piper_server, client):
    arrivals = []
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="echo", input=LONG_TEXT[:1500], response_format="pcm") as response:
        request_id = response.headers["x-request-id"]
        body = bytearray()
        for chunk in response.iter_bytes():
            arrivals.append(time.monotonic())
            body.extend(chunk)
    job = piper_server.job(request_id)
    assert not job.interrupted
    # The server runs in this process: both clocks are time.monotonic().
    assert arrivals[0] < job.finished_at, "first audio arrived only after the whole text was generated"
    assert len(arrivals) > 10
    assert abs(decode(bytes(body), "pcm").seconds - job.audio_seconds) < 0.01


def test_mp3_stream_starts_before_generation_finishes(piper_server):
    with requests.post(f"{piper_server.url}/v1/audio/speech", stream=True, json={
            "model": "tts-1", "voice": "alloy", "input": LONG_TEXT[:1200], "response_format": "mp3"}) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        first_at = time.monotonic()
        rest = b"".join(chunks)
        job = piper_server.job(response.headers["x-request-id"])
    assert first_at < job.finished_at
    assert decode(first + rest, "mp3").seconds == pytest.approx(job.audio_seconds, rel=0.1)


def test_sse_events_have_openai_shapes(piper_server):
    with requests.post(f"{piper_server.url}/v1/audio/speech", stream=True,
                       headers={"Accept": "application/octet-stream"},  # what the SDK sends
                       json={"model": "csm-1b", "voice": "nova", "input": TEXT, "response_format": "pcm",
                             "stream_format": "sse"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.content.decode()
    frames = [frame for frame in raw.split("\n\n") if frame]
    assert all(frame.startswith("data: ") for frame in frames)
    events = [json.loads(frame[len("data: "):]) for frame in frames]
    deltas, done = events[:-1], events[-1]
    assert deltas and all(set(e) == {"type", "audio"} and e["type"] == "speech.audio.delta" for e in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert decode(audio, "pcm").rms > 0.01
    assert "[DONE]" not in raw


def test_sse_through_the_sdk_streaming_response(piper_server, client):
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="coral", input=TEXT, response_format="mp3", stream_format="sse") as response:
        lines = [line for line in response.iter_lines() if line]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert events[-1]["type"] == "speech.audio.done"
    assert decode(audio, "mp3").seconds > 1.0


def test_unknown_keys_are_ignored_and_home_assistant_probe_succeeds(piper_server):
    response = requests.post(f"{piper_server.url}/v1/audio/speech", json={
        "model": "tts-1", "input": ".", "voice": "alloy", "response_format": "mp3", "extra_param": {"x": 1}})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"


@pytest.mark.parametrize("body, param, code", [
    ({"model": "tts-1", "voice": "alloy"}, "input", "missing_required_parameter"),
    ({"model": "tts-1", "voice": "alloy", "input": "   "}, "input", "empty_input"),
    ({"model": "tts-1", "voice": "alloy", "input": 42}, "input", "invalid_type"),
    ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input", "input_too_long"),
    ({"model": "tts-1", "voice": "nobody", "input": "Hi."}, "voice", "voice_not_found"),
    ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": 9}, "speed", "invalid_value"),
    ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": "fast"}, "speed", "invalid_type"),
    ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "speed": True}, "speed", "invalid_type"),
    ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "ogg"}, "response_format", "invalid_value"),
    ({"model": "tts-1", "voice": "alloy", "input": "Hi.", "stream_format": "ws"}, "stream_format", "invalid_value"),
])
def test_bad_input_gets_an_openai_error(piper_server, client, body, param, code):
    response = requests.post(f"{piper_server.url}/v1/audio/speech", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert response.headers["x-request-id"]


def test_invalid_voice_lists_the_voices_through_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert "joe" in info.value.message and "alloy" in info.value.message


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_malformed_bodies_get_400_not_500(piper_server, raw):
    response = requests.post(f"{piper_server.url}/v1/audio/speech", data=raw,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_unknown_route_and_method_get_json_errors(piper_server):
    assert requests.get(f"{piper_server.url}/v1/nope").json()["error"]["type"] == "not_found_error"
    response = requests.get(f"{piper_server.url}/v1/audio/speech")
    assert response.status_code == 405 and "error" in response.json()


def test_voice_and_model_lists(piper_server, client):
    voices = requests.get(f"{piper_server.url}/v1/audio/voices").json()["voices"]
    ids = [voice["id"] for voice in voices]
    assert "joe" in ids and "alloy" in ids and all("name" in voice for voice in voices)
    assert {"id": "tts-1"} in requests.get(f"{piper_server.url}/v1/audio/models").json()["models"]
    models = client.models.list()
    assert "csm-1b" in [model.id for model in models.data]


def test_health_reports_the_engine(piper_server):
    health = requests.get(f"{piper_server.url}/health").json()
    assert health["status"] == "ok"
    assert health["backend"] == "piper"
    assert health["model"]["loaded"] is True
    assert health["voices"] == ["joe"]
    for key in ("queue_depth", "uptime_seconds", "requests_served", "avg_generation_time_ms", "context_cache_size"):
        assert key in health


def test_dropping_a_stream_stops_generation(piper_server):
    before = piper_server.engine.status.interruptions
    with socket.create_connection(("127.0.0.1", int(piper_server.url.rsplit(":", 1)[1]))) as sock:
        body = json.dumps({"model": "tts-1", "voice": "alloy", "input": LONG_TEXT, "response_format": "pcm"})
        sock.sendall(f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                          if line.lower().startswith(b"x-request-id:"))
    job = piper_server.job(request_id)  # the engine finishes the job on its own
    assert job.interrupted
    assert job.frames < job.expected_frames / 2
    wait_until(lambda: piper_server.engine.status.interruptions == before + 1)
    # and the server keeps serving
    assert requests.post(f"{piper_server.url}/v1/audio/speech",
                         json={"model": "tts-1", "voice": "alloy", "input": "Still here."}).status_code == 200


def test_full_queue_gets_429_with_retry_after(tmp_path):
    from tests.conftest import piper_settings
    from tests.live import live_server

    backend = FakeBackend(frames=3, gated=True)
    settings = piper_settings(tmp_path, max_queue_depth=1, warmup_on_start=False)
    with live_server(settings, backend=backend) as server:
        url = f"{server.url}/v1/audio/speech"
        body = {"model": "tts-1", "voice": "fake_voice", "input": "Hi.", "response_format": "pcm"}
        results = []
        running = threading.Thread(target=lambda: results.append(requests.post(url, json=body)))
        running.start()
        wait_until(backend.started.is_set)
        waiting = threading.Thread(target=lambda: results.append(requests.post(url, json=body)))
        waiting.start()
        wait_until(lambda: server.engine.queue_depth == 1)
        rejected = requests.post(url, json=body)
        assert rejected.status_code == 429
        assert int(rejected.headers["Retry-After"]) >= 1
        assert rejected.json()["error"]["type"] == "rate_limit_error"
        backend.gate.release(100)
        running.join(10)
        waiting.join(10)
        assert [r.status_code for r in results] == [200, 200]


def test_mountable_on_an_existing_flask_app(tmp_path):
    from flask import Flask

    from sesame_server import init_app
    from tests.conftest import piper_settings

    app = Flask("host_app")

    @app.get("/")
    def home():
        return "host app"

    runtime = init_app(app, piper_settings(tmp_path, warmup_on_start=False), backend=FakeBackend(frames=4))
    try:
        assert runtime.engine.wait_ready(5)
        client = app.test_client()
        assert client.get("/").data == b"host app"
        response = client.post("/v1/audio/speech", json={"model": "m", "voice": "fake_voice", "input": "Hi.",
                                                         "response_format": "wav"})
        assert response.status_code == 200
        assert decode(response.data, "wav").seconds == pytest.approx(0.32, abs=0.01)
    finally:
        runtime.engine.stop()
