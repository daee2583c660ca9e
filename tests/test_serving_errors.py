"""A generation that fails never passes as success: before the first byte it is an error in
the caller's dialect; after it, each way of sending ends so the client can tell, and nothing
partial is cached."""

from __future__ import annotations

import base64
import json

import openai
import pytest
import requests
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError

from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

VOICE = "fake_voice"
SPEECH = {"model": "tts-1", "voice": VOICE, "input": "Hello there, this fails.", "response_format": "pcm"}
FAILS_BEFORE_AUDIO, FAILS_AFTER_TWO_FRAMES = 0, 2


@pytest.fixture(scope="module", params=[FAILS_BEFORE_AUDIO, FAILS_AFTER_TWO_FRAMES], ids=["before-audio", "after-2-frames"])
def failing(request, tmp_path_factory):
    backend = FakeBackend(frames=6, fail_at=request.param, fail_all=True)
    settings = piper_settings(tmp_path_factory.mktemp("cache"), warmup_on_start=False)
    with live_server(settings, backend=backend) as server:
        server.fail_at = request.param
        yield server


def openai_error(response: requests.Response) -> dict:
    assert response.status_code == 500, response.content[:200]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert response.headers["x-should-retry"] == "true" and response.headers["x-request-id"]
    return error


def elevenlabs_error(response: requests.Response) -> dict:
    assert response.status_code == 500, response.content[:200]
    detail = response.json()["detail"]
    assert detail["status"] == "generation_failed" and "failed" in detail["message"]
    return detail


@pytest.mark.parametrize("output_format", ["wav_24000", "mp3_44100_128", "pcm_24000"])
def test_buffered_convert_is_a_500_never_a_short_200(failing, output_format):
    response = requests.post(f"{failing.url}/v1/text-to-speech/{VOICE}?output_format={output_format}",
                             json={"text": "Hello there."})
    elevenlabs_error(response)
    assert "audio" not in response.headers["content-type"]


def test_buffered_convert_through_the_sdk_raises(failing):
    client = ElevenLabs(base_url=failing.url, api_key="local")
    with pytest.raises(ApiError) as info:
        b"".join(client.text_to_speech.convert(VOICE, text="Hello there.", output_format="wav_24000",
                                               request_options={"max_retries": 0}))
    assert info.value.status_code == 500


def test_with_timestamps_is_a_500(failing):
    elevenlabs_error(requests.post(f"{failing.url}/v1/text-to-speech/{VOICE}/with-timestamps",
                                   json={"text": "Hello there."}))


def test_raw_openai_stream_is_cut_so_the_client_notices(failing):
    response = requests.post(f"{failing.url}/v1/audio/speech", json=SPEECH, stream=True)
    if failing.fail_at == FAILS_BEFORE_AUDIO:
        assert openai_error(response)["code"] == "generation_failed"
        return
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(response.iter_content(None))


def test_raw_stream_through_the_openai_sdk_raises(failing):
    client = openai.OpenAI(base_url=f"{failing.url}/v1", api_key="local", max_retries=0)
    if failing.fail_at == FAILS_BEFORE_AUDIO:
        with pytest.raises(openai.InternalServerError):
            client.audio.speech.create(**SPEECH)
        return
    with client.audio.speech.with_streaming_response.create(**SPEECH) as response:
        # The SDK's transport (httpx) refuses the truncated chunked body.
        with pytest.raises(Exception, match="incomplete chunked read"):
            b"".join(response.iter_bytes())


def test_raw_elevenlabs_stream_is_cut(failing):
    response = requests.post(f"{failing.url}/v1/text-to-speech/{VOICE}/stream?output_format=pcm_24000",
                             json={"text": "Hello there."}, stream=True)
    if failing.fail_at == FAILS_BEFORE_AUDIO:
        elevenlabs_error(response)
        return
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(response.iter_content(None))


def test_sse_ends_with_an_error_event_not_done(failing):
    response = requests.post(f"{failing.url}/v1/audio/speech", json={**SPEECH, "stream_format": "sse"})
    if failing.fail_at == FAILS_BEFORE_AUDIO:
        openai_error(response)
        return
    assert response.status_code == 200
    events = [json.loads(frame.removeprefix("data: ")) for frame in response.text.split("\n\n") if frame]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "server_error"
    assert "speech.audio.done" not in {e["type"] for e in events}
    assert sum(len(base64.b64decode(e["audio"])) for e in events[:-1]) == 2 * 1920 * 2  # two frames, s16


def test_ndjson_ends_with_an_error_line(failing):
    response = requests.post(f"{failing.url}/v1/text-to-speech/{VOICE}/stream/with-timestamps"
                             "?output_format=pcm_24000", json={"text": "Hello there."})
    if failing.fail_at == FAILS_BEFORE_AUDIO:
        elevenlabs_error(response)
        return
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert all("audio_base64" in line for line in lines[:-1]) and len(lines) >= 2
    assert lines[-1]["detail"]["status"] == "generation_failed"


def test_preview_failure_is_a_500_and_nothing_is_cached(failing):
    elevenlabs_error(requests.get(f"{failing.url}/v1/voices/{VOICE}/preview"))
    cache = failing.app.extensions["sesame_tts"].settings.cache_dir
    assert not list((cache / "previews").rglob("*.mp3"))


def test_the_server_keeps_serving_after_failures(failing):
    health = requests.get(f"{failing.url}/health").json()
    assert health["status"] == "ok" and health["queue_depth"] == 0
