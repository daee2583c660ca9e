"""ElevenLabs WebSocket stream-input on the HTTP port, end to end.

The message sequences are the ones LiveKit Agents' elevenlabs plugin (1.8) and Pipecat's
ElevenLabsTTSService (1.14) send, replayed with a `websockets` client (neither package is
in the lock); the single-context socket is driven by the official elevenlabs SDK.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from contextlib import contextmanager

import pytest
import requests
from elevenlabs import ElevenLabs
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sesame_server.config import Settings
from tests.audio_check import assert_speech, decode
from tests.fakes import FakeBackend, wait_until
from tests.live import live_server
from tests.ws_client import LIVEKIT_QUERY, PIPECAT_QUERY, open_socket, read_until_final, send, ws_url

VOICE = "JoeEmbeddedPiper"
REPLY = ["Sure, I can help with that.", "The weather today is clear and bright.", "Anything else?"]


def _seconds(server, request_ids) -> float:
    return sum(server.job(rid).audio_seconds for rid in request_ids)


def _piece_ids(server, before: set[str]) -> list[str]:
    wait_until(lambda: len(set(server.jobs) - before) > 0)
    return [rid for rid in server.jobs if rid not in before]


# -- the real clients' sequences, the Piper voice, audio decoded back ---------------------------
def test_livekit_sequence_mp3(piper_server):
    before = set(piper_server.jobs)
    url = ws_url(piper_server.url, VOICE, LIVEKIT_QUERY.format(fmt="mp3_22050_32"))
    with open_socket(url, **{"xi-api-key": "local"}) as ws:
        send(ws, text=" ", voice_settings={}, context_id="ctx1")
        for sentence in REPLY:  # auto_mode: LiveKit sends whole sentences, each flushed
            send(ws, text=f"{sentence} ", context_id="ctx1", flush=True)
        send(ws, text="", context_id="ctx1", flush=True)
        send(ws, context_id="ctx1", close_context=True)
        received = read_until_final(ws, {"ctx1"})
    ids = _piece_ids(piper_server, before)
    wait_until(lambda: len([r for r in piper_server.jobs if r not in before]) == len(REPLY))
    decoded = decode(bytes(received.audio["ctx1"]), "mp3", 22050)
    assert_speech(decoded, sample_rate=22050, seconds=_seconds(piper_server, ids), tolerance=0.15)
    assert received.chars("ctx1").replace(" ", "") == "".join(REPLY).replace(" ", "")
    assert received.finals == ["ctx1"]


def test_pipecat_sequence_pcm_word_by_word(piper_server):
    """Pipecat streams LLM tokens without flush (auto_mode), then flush and close_context."""
    before = set(piper_server.jobs)
    url = ws_url(piper_server.url, VOICE, PIPECAT_QUERY.format(fmt="pcm_24000"))
    with open_socket(url) as ws:
        send(ws, text=" ", context_id="turn-1", voice_settings={"stability": 0.5, "similarity_boost": 0.75})
        words = " ".join(REPLY).split(" ")
        for index, word in enumerate(words):
            send(ws, text=word + (" " if index < len(words) - 1 else ""), context_id="turn-1")
        send(ws, context_id="turn-1", flush=True)
        send(ws, context_id="turn-1", close_context=True)
        received = read_until_final(ws, {"turn-1"})
    wait_until(lambda: len([r for r in piper_server.jobs if r not in before]) >= 1)
    ids = [r for r in piper_server.jobs if r not in before]
    assert_speech(decode(bytes(received.audio["turn-1"]), "pcm", 24000), sample_rate=24000,
                  seconds=_seconds(piper_server, ids), tolerance=0.05)
    assert [piper_server.job(r).request.text for r in ids] == REPLY  # one piece per sentence, never mid-word


def test_reply_fed_one_word_at_a_time_speaks_after_its_first_sentence(piper_server):
    """One word per message, 20 ms apart: audio comes back while the reply is still being
    written. Nothing more is sent after the first sentence until its audio arrives."""
    url = ws_url(piper_server.url, VOICE, "output_format=pcm_16000")
    with open_socket(url) as ws:
        send(ws, text=" ", context_id="c")
        for word in "Hello there, my friend. How".split(" "):
            send(ws, text=word + " ", context_id="c")
            time.sleep(0.02)
        first = json.loads(ws.recv(timeout=60))  # no flush sent, the reply is not over
        assert first.get("audio") and first["contextId"] == "c"
        assert "".join(first["normalizedAlignment"]["chars"]).startswith("Hello")
        send(ws, text="are you? ", context_id="c")
        send(ws, text="", context_id="c", flush=True)
        send(ws, context_id="c", close_context=True)
        read_until_final(ws, {"c"})


def test_official_sdk_convert_realtime(piper_server):
    """elevenlabs-python dials wss:// whatever the base URL; pointed at ws://, it is unchanged."""
    client = ElevenLabs(base_url=piper_server.url, api_key="local")
    client.text_to_speech._ws_base_url = piper_server.url.replace("http://", "ws://")

    def text():
        yield from ("Good morning. ", "The weather ", "today is clear ", "and bright.")

    data = b"".join(client.text_to_speech.convert_realtime(VOICE, text=text(), output_format="mp3_44100_128"))
    decoded = decode(data, "mp3", 44100)
    assert decoded.sample_rate == 44100 and decoded.seconds > 1.5 and decoded.rms > 0.01


def test_single_context_socket_ends_with_empty_text(piper_server):
    url = ws_url(piper_server.url, VOICE, "output_format=opus_48000_64", multi=False)
    with open_socket(url) as ws:
        send(ws, text=" ", generation_config={"chunk_length_schedule": [50]})
        send(ws, text="This is a test of the stream input socket. ")
        send(ws, text="")
        received = read_until_final(ws, {None})
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1000
    decoded = decode(bytes(received.audio[None]), "opus")
    assert decoded.sample_rate == 48000 and decoded.seconds > 1 and decoded.rms > 0.01
    assert all("contextId" not in m for m in received.messages)


def test_plain_http_get_is_told_to_upgrade(piper_server):
    response = requests.get(f"{piper_server.url}/v1/text-to-speech/{VOICE}/multi-stream-input")
    assert response.status_code == 426
    assert response.json()["detail"]["status"] == "upgrade_required"
    assert requests.get(f"{piper_server.url}/health").status_code == 200


# -- interruption, order, limits: a fake backend that waits for the test -------------------------
@pytest.fixture()
def gated(tmp_path):
    backend = FakeBackend(frames=40, gated=True)
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4, max_websockets=2)
    with live_server(settings, backend=backend) as server:
        yield server, backend


def _metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_close_context_mid_generation_stops_within_one_frame(gated, caplog):
    server, backend = gated
    caplog.set_level(logging.INFO)
    cancelled_before = _metric(server.url, "sesame_tts_cancellations_total", dialect="elevenlabs", stage="generating")
    with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
        send(ws, text="A long answer that the user will interrupt. ", context_id="c1", flush=True)
        backend.gate.release(2)
        first = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
        assert all(m["contextId"] == "c1" and m["audio"] for m in first)
        piece = backend.served[-1]
        send(ws, context_id="c1", close_context=True)  # a barge-in: text was still arriving
        final = json.loads(ws.recv(timeout=10))
        assert final == {"isFinal": True, "contextId": "c1"}
        job = server.job(piece)
        assert job.interrupted and backend.frames_after_cancel[piece] == 0
        # The socket carries on: a second context completes.
        send(ws, text="Next turn. ", context_id="c2")
        send(ws, text="", context_id="c2", flush=True)
        send(ws, context_id="c2", close_context=True)
        backend.gate.release(100)
        received = read_until_final(ws, {"c2"})
    assert set(received.audio) == {"c2"}  # nothing for c1 after its isFinal
    assert len(received.audio["c2"]) == 40 * 1920 * 2  # 40 frames of 80 ms, 16-bit, 24 kHz
    wait_until(lambda: _metric(server.url, "sesame_tts_cancellations_total", dialect="elevenlabs",
                               stage="generating") == cancelled_before + 1)
    assert "closed by the client mid-generation" in caplog.text
    assert re.search(r"interrupted at frame 2 of", caplog.text)


def test_contexts_are_served_in_order_of_arrival(gated):
    server, backend = gated
    with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
        for context_id in ("a", "b"):
            send(ws, text=f"Context {context_id}{context_id}. ", context_id=context_id)
        send(ws, text="More of aa. ", context_id="a")
        for context_id in ("a", "b"):
            send(ws, context_id=context_id, flush=True)
            send(ws, context_id=context_id, close_context=True)
        backend.gate.release(400)
        received = read_until_final(ws, {"a", "b"})
    texts = [request.text for request in backend.requests[-3:]]
    assert texts == ["Context aa.", "Context bb.", "More of aa."]
    assert received.finals == ["a", "b"]


def test_dropped_socket_stops_generation(gated):
    server, backend = gated
    with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
        send(ws, text="Speak until the client vanishes. ", context_id="c", flush=True)
        backend.gate.release(1)
        assert json.loads(ws.recv(timeout=10))["audio"]
        piece = backend.served[-1]
        ws.socket.shutdown(2)  # no close frame: the network went away
    job = server.job(piece)
    assert job.interrupted and backend.frames_after_cancel[piece] == 0
    wait_until(lambda: len(server.app.extensions["sesame_tts"].sockets) == 0)


def _refused(url: str, *messages, raw: bytes | None = None, **headers) -> tuple[dict, int]:
    with open_socket(url, **headers) as ws:
        for message in messages:
            ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
        if raw is not None:
            ws.send(raw)
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    return error, closed.value.rcvd.code


@pytest.mark.parametrize("message, error", [
    ("{not json", "invalid_input_message"),
    ('{"text": 5, "context_id": "c"}', "invalid_input_message"),
    ('["text"]', "invalid_input_message"),
    ('{"text": "x", "context_id": "c", "voice_settings": {"stability": 7}}', "invalid_input_message"),
    ('{"text": "bell \\u0007", "context_id": "c"}', "invalid_input_message"),
    (b"\x00\x01binary", "invalid_input_message"),
])
def test_bad_messages_get_an_error_then_1008(gated, message, error):
    server, _ = gated
    body, code = _refused(ws_url(server.url, "fake_voice"), message)
    assert body["error"] == error and body["code"] == 1008 and body["message"]
    assert code == 1008
    assert requests.get(f"{server.url}/health").status_code == 200


def test_too_many_contexts_and_too_big_messages(gated):
    server, _ = gated
    opens = [{"text": " ", "context_id": f"c{i}"} for i in range(6)]
    body, code = _refused(ws_url(server.url, "fake_voice"), *opens)
    assert (body["error"], body["code"], body["contextId"], code) == ("max_active_conversations", 1008, "c5", 1008)
    with open_socket(ws_url(server.url, "fake_voice")) as ws:
        ws.send(json.dumps({"text": "x" * 300_000, "context_id": "c"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009


def test_inactivity_timeout_closes_a_silent_single_socket(gated):
    server, _ = gated
    url = ws_url(server.url, "fake_voice", "inactivity_timeout=1", multi=False)
    body, code = _refused(url, {"text": " "})
    assert (body["error"], code) == ("input_timeout_exceeded", 1008)


@pytest.mark.parametrize("query, status, code", [
    ("output_format=wav_24000", 422, None), ("output_format=nope", 422, None), ("inactivity_timeout=999", 422, None),
])
def test_bad_queries_fail_the_handshake(gated, query, status, code):
    server, _ = gated
    with pytest.raises(InvalidStatus) as refused:
        open_socket(ws_url(server.url, "fake_voice", query))
    assert refused.value.response.status_code == status
    assert "detail" in json.loads(refused.value.response.body)


def test_unknown_voice_cross_site_pages_and_socket_limit(gated):
    server, _ = gated
    with pytest.raises(InvalidStatus) as refused:
        open_socket(ws_url(server.url, "no_such_voice!"))
    assert json.loads(refused.value.response.body)["detail"]["status"] == "voice_not_found"
    with pytest.raises(InvalidStatus) as refused:
        open_socket(ws_url(server.url, "fake_voice"), Origin="https://evil.example")
    assert refused.value.response.status_code == 403
    with open_socket(ws_url(server.url, "fake_voice")), open_socket(ws_url(server.url, "fake_voice")):
        with pytest.raises(InvalidStatus) as refused:  # MAX_WEBSOCKETS=2
            open_socket(ws_url(server.url, "fake_voice"))
        assert _metric(server.url, "sesame_tts_websockets_open") == 2
    assert refused.value.response.status_code == 503


def test_api_key_in_header_query_or_first_message(tmp_path):
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4, api_key="s3cret")
    backend = FakeBackend(frames=2)
    with live_server(settings, backend=backend) as server:
        url = ws_url(server.url, "fake_voice", "output_format=pcm_24000")
        with pytest.raises(InvalidStatus) as refused:
            open_socket(url, **{"xi-api-key": "wrong"})
        assert refused.value.response.status_code == 401
        body, code = _refused(url, {"text": " ", "context_id": "c"})
        assert (body["error"], code) == ("invalid_api_key", 1008)
        for how in ({"headers": {"xi-api-key": "s3cret"}}, {"first": {"xi_api_key": "s3cret"}},
                    {"query": "&authorization=s3cret"}):
            with open_socket(url + how.get("query", ""), **how.get("headers", {})) as ws:
                send(ws, text=" ", context_id="c", **how.get("first", {}))
                send(ws, text="Hello. ", context_id="c")
                send(ws, text="", context_id="c", flush=True)
                send(ws, context_id="c", close_context=True)
                assert read_until_final(ws, {"c"}).audio["c"]


def test_shutdown_says_going_away(tmp_path):
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4)
    with open_socket_after_start(settings) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1001


@contextmanager
def open_socket_after_start(settings):
    """A socket open while the server shuts down."""
    with live_server(settings, backend=FakeBackend(frames=2)) as server:
        ws = open_socket(ws_url(server.url, "fake_voice")).__enter__()
    try:
        yield ws
    finally:
        ws.__exit__(None, None, None)


def test_embedded_app_without_waitress_says_websockets_need_the_server(tmp_path):
    from flask import Flask

    from sesame_server.app import init_app

    app = Flask("host")
    init_app(app, Settings(backend="piper", cache_dir=tmp_path), backend=FakeBackend(), start=False)
    response = app.test_client().get("/v1/text-to-speech/fake_voice/stream-input", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert response.status_code == 501
    assert response.get_json()["detail"]["status"] == "websocket_unavailable"


def test_many_sockets_at_once_all_complete(tmp_path):
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=2, max_websockets=8)
    with live_server(settings, backend=FakeBackend(frames=3)) as server:
        results: list[int] = []

        def client(index: int) -> None:
            with open_socket(ws_url(server.url, "fake_voice", "output_format=pcm_24000")) as ws:
                send(ws, text=f"Client {index}. ", context_id="c")
                send(ws, text="", context_id="c", flush=True)
                send(ws, context_id="c", close_context=True)
                results.append(len(read_until_final(ws, {"c"}).audio["c"]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == [3 * 1920 * 2] * 6  # more sockets than waitress threads: none holds one
        assert requests.get(f"{server.url}/health").status_code == 200
