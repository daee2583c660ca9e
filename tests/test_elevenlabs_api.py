"""The ElevenLabs dialect end to end: real server, the official elevenlabs SDK, audio decoded back."""

from __future__ import annotations

import base64
import io
import json
import socket

import numpy as np
import openai
import pytest
import requests
import soundfile
from elevenlabs import ElevenLabs, VoiceSettings
from elevenlabs.core.api_error import ApiError

from sesame_server.audio.formats import ELEVENLABS_FORMATS, elevenlabs_format
from tests.audio_check import assert_speech, decode, mp3_frame_headers

TEXT = "Good morning. The weather today is clear and bright."
OPENCLAW_DEFAULT_VOICE = "pMsXgVXv3BLzUgSXRplE"
VOICE = "JoeEmbeddedPiper"  # the Piper voice's ElevenLabs-side id


@pytest.fixture(scope="module")
def client(piper_server):
    return ElevenLabs(base_url=piper_server.url, api_key="local")


def check_audio(server, data: bytes, output_format: str, request_id: str) -> None:
    fmt = elevenlabs_format(output_format)
    job = server.job(request_id)
    decoded = decode(data, fmt.container, fmt.sample_rate)
    expected_rate = 48000 if fmt.container == "opus" else fmt.sample_rate
    assert_speech(decoded, sample_rate=expected_rate, seconds=job.audio_seconds)
    if fmt.container == "mp3":
        headers = mp3_frame_headers(data)
        assert {(bitrate, rate) for bitrate, rate, _ in headers} == {(fmt.bitrate, fmt.sample_rate)}
        assert {mode for _, _, mode in headers} == {3}  # mono


@pytest.mark.parametrize("output_format", ELEVENLABS_FORMATS)
def test_convert_every_format(piper_server, client, output_format):
    with client.text_to_speech.with_raw_response.convert(
            VOICE, text=TEXT, model_id="eleven_multilingual_v2", output_format=output_format) as response:
        data = b"".join(response.data)
        headers = response.headers
    assert headers["content-type"] == elevenlabs_format(output_format).content_type
    assert headers["character-cost"] == str(len(TEXT))
    assert headers["request-id"] and headers["history-item-id"] == headers["request-id"]
    assert int(headers["content-length"]) == len(data)
    check_audio(piper_server, data, output_format, headers["request-id"])


@pytest.mark.parametrize("output_format", ["mp3_44100_128", "pcm_24000", "opus_48000_64", "ulaw_8000", "mp3_44100"])
def test_stream(piper_server, client, output_format):
    with client.text_to_speech.with_raw_response.stream(VOICE, text=TEXT, output_format=output_format) as response:
        data = b"".join(response.data)
        assert response.headers["transfer-encoding"] == "chunked"
        check_audio(piper_server, data, output_format, response.headers["request-id"])


def test_wav_is_refused_on_stream_but_served_whole(piper_server, client):
    with pytest.raises(ApiError) as info:
        b"".join(client.text_to_speech.stream(VOICE, text=TEXT, output_format="wav_24000"))
    assert info.value.status_code == 422
    assert info.value.body["detail"][0]["loc"] == ["query", "output_format"]  # where the SDK sends it


def test_convert_with_timestamps(client):
    result = client.text_to_speech.convert_with_timestamps(VOICE, text=TEXT, output_format="pcm_24000")
    audio = decode(base64.b64decode(result.audio_base_64), "pcm", 24000)
    alignment = result.alignment
    assert "".join(alignment.characters) == TEXT
    starts, ends = alignment.character_start_times_seconds, alignment.character_end_times_seconds
    assert all(s <= e for s, e in zip(starts, ends))
    assert all(a <= b for a, b in zip(ends, starts[1:]))  # monotonic
    assert starts[0] == 0 and ends[-1] == pytest.approx(audio.seconds, abs=0.01)
    assert result.normalized_alignment.characters == alignment.characters


def test_stream_with_timestamps_is_ndjson_covering_every_character(piper_server, client):
    text = "First sentence here. " * 6 + "And the end."
    chunks = list(client.text_to_speech.stream_with_timestamps(VOICE, text=text, output_format="mp3_44100_64"))
    assert len(chunks) > 2
    audio = b"".join(base64.b64decode(chunk.audio_base_64) for chunk in chunks)
    characters, starts = [], []
    for chunk in chunks:
        if chunk.alignment:
            characters += chunk.alignment.characters
            starts += chunk.alignment.character_start_times_seconds
    assert "".join(characters) == text
    assert starts == sorted(starts)
    assert decode(audio, "mp3").seconds > 3
    # NDJSON, not SSE
    raw = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}/stream/with-timestamps",
                        json={"text": "Hi there."})
    assert raw.headers["content-type"] == "application/x-ndjson"
    assert all(json.loads(line) for line in raw.text.splitlines())


def test_voice_settings_seed_and_speed(piper_server, client):
    def speak(**kwargs) -> bytes:
        return b"".join(client.text_to_speech.convert(VOICE, text=TEXT, output_format="pcm_24000", **kwargs))

    assert speak(seed=42) == speak(seed=42)  # reproducible
    slow = speak(seed=1, voice_settings=VoiceSettings(stability=0.9, speed=0.5))
    fast = speak(seed=1, voice_settings=VoiceSettings(stability=0.9, speed=1.5))
    assert len(slow) > 2 * len(fast)  # 3x nominal; pauses scale less
    clamped = speak(voice_settings=VoiceSettings(speed=9.0))  # clamped, never rejected
    assert len(clamped) > 0


def test_optimize_streaming_latency_and_output_format_in_body(piper_server):
    response = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}/stream?optimize_streaming_latency=3",
                             json={"text": TEXT, "output_format": "pcm_16000"})
    assert response.status_code == 200
    check_audio(piper_server, response.content, "pcm_16000", response.headers["request-id"])


def test_voices(piper_server, client):
    voices = client.voices.get_all().voices
    assert [v.voice_id for v in voices] == [VOICE]
    voice = voices[0]
    assert voice.name and voice.category == "premade" and voice.labels["accent"] == "american"
    assert voice.preview_url.endswith(f"/v1/voices/{VOICE}/preview")
    assert voice.available_for_tiers == [] and voice.high_quality_base_model_ids
    assert client.voices.get(VOICE).voice_id == VOICE
    assert client.voices.get("joe").voice_id == VOICE  # local ids work too
    found = client.voices.search(search="JOE", page_size=5)
    assert found.total_count == 1 and not found.has_more and found.voices[0].voice_id == VOICE
    assert client.voices.search(search="nobody").total_count == 0
    assert client.voices.settings.get_default().stability == 0.5
    assert client.voices.settings.get(VOICE).similarity_boost == 0.75
    with pytest.raises(ApiError) as info:
        client.voices.get("NoSuchVoice123")
    assert info.value.status_code == 404 and info.value.body["detail"]["status"] == "voice_not_found"


def test_preview_is_generated_once_and_cached(piper_server):
    url = f"{piper_server.url}/v1/voices/{VOICE}/preview"
    served = piper_server.engine.status.requests_served
    first = requests.get(url)
    assert first.status_code == 200 and first.headers["content-type"] == "audio/mpeg"
    assert 2.0 < decode(first.content, "mp3").seconds < 8.0
    second = requests.get(url)
    assert second.content == first.content
    assert piper_server.engine.status.requests_served == served + 1


def test_models_answer_each_sdk_in_its_own_shape(piper_server, client):
    models = client.models.list()
    assert models[0].model_id == "csm-1b"
    assert models[0].can_do_text_to_speech and models[0].languages[0].language_id == "en"
    assert models[0].model_rates.character_cost_multiplier == 1.0
    oai = openai.OpenAI(base_url=f"{piper_server.url}/v1", api_key="x")
    assert "csm-1b" in [m.id for m in oai.models.list().data]
    raw = requests.get(f"{piper_server.url}/v1/models", headers={"xi-api-key": "k"}).json()
    assert isinstance(raw, list)


def test_user_and_subscription(client):
    subscription = client.user.subscription.get()
    assert subscription.status == "active" and subscription.character_limit >= 999_999_999
    assert subscription.current_overage.currency == "usd"
    user = client.user.get()
    assert user.user_id and user.subscription.tier == "local" and isinstance(user.created_at, int)
    assert user.seat_type == "workspace_admin"


def test_account_bodies_pass_the_sdk_models_strictly(piper_server):
    """elevenlabs-js validates every required field; check with the SDK's own pydantic types."""
    from elevenlabs.types import SubscriptionResponse, User

    SubscriptionResponse.model_validate(requests.get(f"{piper_server.url}/v1/user/subscription").json())
    User.model_validate(requests.get(f"{piper_server.url}/v1/user").json())


@pytest.mark.parametrize("route, output_format", [
    ("", "mp3_44100_128"), ("/stream", "pcm_22050"), ("/stream", "opus_48000_64"), ("", "ulaw_8000"),
])
def test_punctuation_only_text_is_a_short_valid_file(piper_server, client, route, output_format):
    """OpenClaw treats an empty body as an error: nothing to say is still a (silent) file."""
    response = requests.post(f"{piper_server.url}/v1/text-to-speech/{OPENCLAW_DEFAULT_VOICE}{route}",
                             params={"output_format": output_format}, json={"text": "..."})
    assert response.status_code == 200 and response.content
    fmt = elevenlabs_format(output_format)
    assert 0.05 < decode(response.content, fmt.container, fmt.sample_rate).seconds < 0.2


def test_cloning_needs_the_csm_backend(client):
    reference = io.BytesIO()
    soundfile.write(reference, 0.3 * np.sin(np.arange(48000) / 7).astype(np.float32), 24000, format="WAV")
    reference.seek(0)
    with pytest.raises(ApiError) as info:
        client.voices.ivc.create(name="Me", files=[("me.wav", reference, "audio/wav")])
    assert info.value.status_code == 400
    assert info.value.body["detail"]["status"] == "voice_cloning_unavailable"


# -- OpenClaw's request shapes, replayed (API_NOTES.md §4) -----------------------------------

OPENCLAW_BODY = {"text": TEXT, "model_id": "eleven_multilingual_v2", "seed": 7, "apply_text_normalization": "auto",
                 "language_code": "en", "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "style": 0.0,
                                                           "use_speaker_boost": True, "speed": 1.0}}


@pytest.mark.parametrize("path, output_format", [
    ("", "mp3_44100_128"), ("", "opus_48000_64"), ("", "pcm_22050"),
    ("/stream", "pcm_44100"), ("/stream", "mp3_44100"),
])
def test_openclaw_requests(piper_server, path, output_format):
    accept = {"Accept": "audio/mpeg"} if output_format.startswith("mp3") else {}
    response = requests.post(
        f"{piper_server.url}/v1/text-to-speech/{OPENCLAW_DEFAULT_VOICE}{path}?output_format={output_format}",
        headers={"xi-api-key": "anything", **accept}, json=OPENCLAW_BODY)
    assert response.status_code == 200, response.text
    assert "audio" in response.headers["content-type"]
    check_audio(piper_server, response.content, output_format, response.headers["request-id"])


def test_openclaw_voice_list(piper_server):
    voices = requests.get(f"{piper_server.url}/v1/voices", headers={"xi-api-key": "x"}).json()["voices"]
    import re
    assert all(re.fullmatch(r"[A-Za-z0-9]{10,40}", voice["voice_id"]) for voice in voices)


@pytest.mark.parametrize("path, body, status, detail_status", [
    ("/v1/text-to-speech/bad_voice!", {"text": "Hi."}, 400, "voice_not_found"),
    (f"/v1/text-to-speech/{VOICE}", {"text": "x" * 4097}, 400, "max_character_limit_exceeded"),
    (f"/v1/text-to-speech/{VOICE}", {"text": "   "}, 400, "empty_text"),
    (f"/v1/text-to-speech/{VOICE}?output_format=mp3_1_2", {"text": "Hi."}, 422, None),
    (f"/v1/text-to-speech/{VOICE}", {"model_id": "x"}, 422, None),
    (f"/v1/text-to-speech/{VOICE}", {"text": "Hi.", "seed": -1}, 422, None),
    (f"/v1/text-to-speech/{VOICE}", {"text": "Hi.", "voice_settings": {"stability": 3}}, 422, None),
    (f"/v1/text-to-speech/{VOICE}", {"text": "Hi.", "previous_request_ids": ["a", "b", "c", "d"]}, 422, None),
    (f"/v1/text-to-speech/{VOICE}/stream?optimize_streaming_latency=9", {"text": "Hi."}, 422, None),
])
def test_bad_input_gets_elevenlabs_errors(piper_server, path, body, status, detail_status):
    response = requests.post(piper_server.url + path, json=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    if status == 422:
        assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0])
    else:
        assert detail["status"] == detail_status and detail["message"]
        if detail_status == "voice_not_found":
            assert "joe" in detail["message"]


def test_disconnect_on_stream_stops_generation(piper_server):
    text = " ".join(f"Sentence {n} of a long reply that nobody will hear to the end." for n in range(40))
    body = json.dumps({"text": text})
    port = int(piper_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST /v1/text-to-speech/{VOICE}/stream?output_format=pcm_24000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                          if line.lower().startswith(b"request-id:"))
    job = piper_server.job(request_id)
    assert job.interrupted and job.frames < job.expected_frames / 2


def test_api_key_when_configured(tmp_path):
    from tests.conftest import piper_settings
    from tests.fakes import FakeBackend
    from tests.live import live_server

    settings = piper_settings(tmp_path, api_key="s3cret", warmup_on_start=False)
    with live_server(settings, backend=FakeBackend(frames=2)) as server:
        tts = f"{server.url}/v1/text-to-speech/fake_voice"
        denied = requests.post(tts, json={"text": "Hi."})
        assert denied.status_code == 401 and denied.json()["detail"]["status"] == "invalid_api_key"
        denied = requests.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "voice": "fake_voice"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert requests.post(tts, json={"text": "Hi."}, headers={"xi-api-key": "s3cret"}).status_code == 200
        assert requests.post(tts, json={"text": "Hi."}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert requests.post(tts, json={"text": "Hi."}, headers={"xi-api-key": "wrong"}).status_code == 401
        assert requests.get(f"{server.url}/health").status_code == 200  # not an API route
        # /v1/models answers both SDKs, errors included: each in its own shape.
        denied = requests.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        denied = requests.get(f"{server.url}/v1/models", headers={"xi-api-key": "wrong"})
        assert denied.status_code == 401 and denied.json()["detail"]["status"] == "invalid_api_key"
        sdk = ElevenLabs(base_url=server.url, api_key="s3cret")
        assert sdk.voices.get_all().voices
