"""ElevenLabs text to dialogue, HTTP and WebSocket, on the Piper voice (CSM: test_csm_server.py).

The WebSocket sequences are OpenClaw's (extensions/elevenlabs/dialogue.ts: `voices`, then
turns `{"inputs": [...], "flush": true}` answered by `is_final_audio_for_turn`) and LiveKit's
for eleven_v3 models (`/v1/text-to-dialogue/multi-stream-input`, contexts)."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from tests.audio_check import assert_speech, decode
from tests.fakes import wait_until
from tests.ws_client import open_socket, send

JOE = "JoeEmbeddedPiper"
OTHER = "pMsXgVXv3BLzUgSXRplE"  # any well-formed ElevenLabs id: the default voice
LINES = [("Hi Joe, how are you today?", JOE), ("I'm fine, thanks for asking.", OTHER), ("Great to hear.", JOE)]
BODY = {"inputs": [{"text": text, "voice_id": voice} for text, voice in LINES], "model_id": "eleven_v3"}


def _new_jobs(server, before: set[str], count: int):
    wait_until(lambda: len(set(server.jobs) - before) >= count)
    return sorted((server.jobs[r] for r in set(server.jobs) - before), key=lambda job: job.sequence)


@pytest.mark.parametrize("path, output_format, container, rate", [
    ("/v1/text-to-dialogue", "mp3_44100_128", "mp3", 44100),
    ("/v1/text-to-dialogue", "wav_16000", "wav", 16000),
    ("/v1/text-to-dialogue/stream", "pcm_24000", "pcm", 24000),
    ("/v1/text-to-dialogue/stream", "opus_48000_64", "opus", 48000),
])
def test_three_lines_come_back_as_one_stream_in_order(piper_server, path, output_format, container, rate):
    before = set(piper_server.jobs)
    response = requests.post(f"{piper_server.url}{path}?output_format={output_format}", json=BODY,
                             headers={"xi-api-key": "local"})
    assert response.status_code == 200, response.text
    jobs = _new_jobs(piper_server, before, 3)
    assert [job.request.text for job in jobs] == [text for text, _ in LINES]
    assert all(not job.interrupted for job in jobs)
    assert_speech(decode(response.content, container, rate), sample_rate=rate,
                  seconds=sum(job.audio_seconds for job in jobs), tolerance=0.1)
    assert response.headers["character-cost"] == str(sum(len(text) for text, _ in LINES))
    if path.endswith("dialogue"):
        assert response.headers["X-Context-Turns"] == "0,0,0"  # Piper takes no context


@pytest.mark.parametrize("body, status, code", [
    ({"inputs": []}, 422, None),
    ({"inputs": [{"text": "Hello"}]}, 422, None),
    ({"inputs": [{"text": "   ", "voice_id": JOE}]}, 400, "empty_text"),
    ({"inputs": [{"text": "Hello", "voice_id": "not a voice"}]}, 400, "voice_not_found"),
    ({"inputs": [{"text": "x" * 3000, "voice_id": JOE}] * 2}, 400, "max_character_limit_exceeded"),
    ({"inputs": [{"text": "Hello", "voice_id": JOE}], "settings": {"stability": 3}}, 422, None),
])
def test_bad_dialogues_get_elevenlabs_errors(piper_server, body, status, code):
    response = requests.post(f"{piper_server.url}/v1/text-to-dialogue", json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    if code:
        assert detail["status"] == code
    else:
        assert isinstance(detail, list) and detail[0]["loc"][0] == "body"
    stream = requests.post(f"{piper_server.url}/v1/text-to-dialogue/stream?output_format=wav_24000", json=BODY)
    assert stream.status_code == 422  # wav is not a stream format, as with ElevenLabs


def _turn(ws) -> tuple[bytes, list[dict]]:
    audio, messages = b"", []
    while True:
        message = json.loads(ws.recv(timeout=60))
        assert "error" not in message, message
        messages.append(message)
        if message.get("audio"):
            audio += base64.b64decode(message["audio"])
        if message.get("is_final_audio_for_turn"):
            return audio, messages


def test_openclaw_dialogue_socket_turn_by_turn(piper_server):
    url = (f"{piper_server.url.replace('http', 'ws')}/v1/text-to-dialogue/stream-input"
           "?model_id=eleven_v4&output_format=mp3_44100_128&seed=7")
    with open_socket(url, **{"xi-api-key": "local"}) as ws:
        send(ws, voices=[JOE], voice_settings={"stability": 0.5})
        for text in ("Hello there, this is the first turn.", "And this is the second one."):
            send(ws, inputs=[{"text": text, "voice_id": JOE, "new_turn": True}], flush=True)
            audio, messages = _turn(ws)
            decoded = decode(audio, "mp3", 44100)  # each turn is a file of its own
            assert decoded.seconds > 1 and decoded.rms > 0.01
            aligned = "".join("".join(m["alignment"]["chars"]) for m in messages if m.get("alignment"))
            assert aligned == text
            assert {"char_start_times_ms", "char_durations_ms"} <= set(messages[0]["alignment"])
        send(ws, keep_alive=True)


def test_livekit_dialogue_contexts(piper_server):
    url = (f"{piper_server.url.replace('http', 'ws')}/v1/text-to-dialogue/multi-stream-input"
           "?model_id=eleven_v3&output_format=pcm_24000&enable_logging=true&apply_text_normalization=auto"
           "&sync_alignment=true")
    with open_socket(url) as ws:
        send(ws, context_id="c1", voices=[JOE])
        send(ws, context_id="c1", inputs=[{"text": "Good morning. ", "voice_id": JOE}], flush=True)
        send(ws, context_id="c1", inputs=[{"text": "How can I help? ", "voice_id": JOE}], flush=True)
        send(ws, context_id="c1", inputs=[{"text": "", "voice_id": JOE}], flush=True)
        send(ws, context_id="c1", close_context=True)
        audio = b""
        while True:
            message = json.loads(ws.recv(timeout=60))
            assert message["context_id"] == "c1" and "contextId" not in message
            audio += base64.b64decode(message["audio"]) if message.get("audio") else b""
            if message.get("is_final"):
                break
    decoded = decode(audio, "pcm", 24000)
    assert decoded.seconds > 1.5 and decoded.rms > 0.01


def test_unknown_voice_in_a_dialogue_line_is_refused(piper_server):
    url = f"{piper_server.url.replace('http', 'ws')}/v1/text-to-dialogue/stream-input"
    with open_socket(url) as ws:
        send(ws, voices=[JOE])
        send(ws, inputs=[{"text": "Hello.", "voice_id": "no such voice"}], flush=True)
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert error["error"] == "voice_not_found" and closed.value.rcvd.code == 1008


def test_official_sdk_text_to_dialogue(piper_server):
    from elevenlabs import DialogueInput, ElevenLabs

    client = ElevenLabs(base_url=piper_server.url, api_key="local")
    inputs = [DialogueInput(text=text, voice_id=voice) for text, voice in LINES]
    for call, output_format, container, rate in ((client.text_to_dialogue.convert, "mp3_22050_32", "mp3", 22050),
                                                 (client.text_to_dialogue.stream, "pcm_16000", "pcm", 16000)):
        data = b"".join(call(inputs=inputs, output_format=output_format, model_id="eleven_v3"))
        decoded = decode(data, container, rate)
        assert decoded.sample_rate == rate and decoded.seconds > 3 and decoded.rms > 0.01
