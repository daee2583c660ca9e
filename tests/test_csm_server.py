"""The CSM backends end to end: the real server on the tiny CSM, the official SDKs as clients,
each test on MLX (`csm`) and on PyTorch (`csm-torch`, the same weights converted to
transformers' layout; skipped where torch is not installed).

The tiny model is random, so its audio is noise; what a listener can still check is that
every format decodes, at the promised rate, for as long as the frames generated, not silent.
"""

from __future__ import annotations

import io

import numpy as np
import openai
import pytest
import requests
import soundfile
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError

from sesame_server.audio.formats import elevenlabs_format, openai_format
from tests.audio_check import assert_speech, decode
from tests.csm_tiny import BACKENDS, backend_for, tiny_settings_for
from tests.fakes import wait_until
from tests.live import live_server

TEXT = "Hello there. This is the conversational voice."
FRAMES = 10  # per sentence: keeps the tiny model's noise short
DECODED_RATE = {"opus": 48000}


@pytest.fixture(scope="module", params=BACKENDS)
def csm_server(request, tmp_path_factory):
    settings = tiny_settings_for(request.param, tmp_path_factory.mktemp("cache"), threads=8, warmup_on_start=True)
    with live_server(settings, backend=backend_for(request.param, settings, max_frames_per_sentence=FRAMES)) as server:
        yield server


@pytest.fixture(scope="module")
def oai(csm_server):
    return openai.OpenAI(base_url=f"{csm_server.url}/v1", api_key="local", max_retries=0)


@pytest.fixture(scope="module")
def eleven(csm_server):
    return ElevenLabs(base_url=csm_server.url, api_key="local")


def check(server, data: bytes, container: str, rate: int, request_id: str) -> None:
    job = server.job(request_id)
    assert not job.interrupted and job.frames > 0
    decoded = decode(data, container, rate)
    assert_speech(decoded, sample_rate=DECODED_RATE.get(container, rate), seconds=job.audio_seconds)


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_openai_every_format_buffered(csm_server, oai, response_format):
    response = oai.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=response_format)
    fmt = openai_format(response_format)
    assert response.headers["content-type"] == fmt.content_type
    check(csm_server, response.content, fmt.container, fmt.sample_rate, response.headers["x-request-id"])


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_openai_every_format_streamed(csm_server, oai, response_format):
    with oai.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="echo", input=TEXT, response_format=response_format) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        request_id = response.headers["x-request-id"]
        data = b"".join(response.iter_bytes())
    fmt = openai_format(response_format)
    check(csm_server, data, fmt.container, fmt.sample_rate, request_id)


def test_streamed_pcm_arrives_frame_by_frame(csm_server):
    """First PCM block after one frame (80 ms = 3840 bytes at 24 kHz), more blocks follow."""
    with requests.post(f"{csm_server.url}/v1/audio/speech", stream=True, json={
            "model": "tts-1", "voice": "alloy", "input": "One sentence only.", "response_format": "pcm"}) as response:
        chunks = [chunk for chunk in response.iter_content(chunk_size=None) if chunk]
    job = csm_server.job(response.headers["x-request-id"])
    assert job.frames == FRAMES
    assert len(chunks[0]) <= 2 * 3840, f"first chunk held {len(chunks[0])} bytes: more than one frame's worth"
    assert len(chunks) >= FRAMES // 2


@pytest.mark.parametrize("output_format", ["mp3_44100_128", "pcm_24000", "opus_48000_64", "ulaw_8000"])
def test_elevenlabs_convert_and_stream(csm_server, eleven, output_format):
    voice_id = next(v.voice_id for v in eleven.voices.get_all().voices if "Max" in v.name)
    fmt = elevenlabs_format(output_format)
    for call in (eleven.text_to_speech.with_raw_response.convert, eleven.text_to_speech.with_raw_response.stream):
        with call(voice_id, text=TEXT, output_format=output_format) as response:
            data = b"".join(response.data)
            check(csm_server, data, fmt.container, fmt.sample_rate, response.headers["request-id"])


def test_health_reports_the_csm_model(csm_server):
    body = requests.get(f"{csm_server.url}/health").json()
    assert body["status"] == "ok"
    model = body["model"]
    assert model["loaded"] and model["dtype"] and body["process"]["rss_bytes"] > 0
    assert model["memory_bytes"] > 0 and model["memory_gb"] == round(model["memory_bytes"] / 1e9, 3)
    assert model["peak_memory_bytes"] >= model["memory_bytes"]


def test_cloned_voice_via_the_elevenlabs_sdk(csm_server, eleven):
    backend = csm_server.engine.backend
    rng = np.random.default_rng(0)
    seconds = np.arange(24000 * 3) / 24000
    reference = (0.3 * np.sin(2 * np.pi * 180 * seconds) * (1 + 0.2 * rng.standard_normal(len(seconds)))).astype(np.float32)
    upload = io.BytesIO()
    soundfile.write(upload, reference, 24000, format="WAV")
    upload.seek(0)
    encodes = backend.mimi_encodes
    created = eleven.voices.ivc.create(name="My Voice", files=[("me.wav", upload, "audio/wav")],
                                       description="test", labels={"accent": "none"})
    voice_id = created.voice_id
    assert eleven.voices.get(voice_id).name == "My Voice"
    assert any(v.voice_id == voice_id and v.category == "cloned" for v in eleven.voices.get_all().voices)

    assert backend.mimi_encodes == encodes + 1  # encoded (and prefilled) once, at upload
    assert voice_id in csm_server.engine.status.backend["voices_prefilled"]
    fmt = elevenlabs_format("pcm_24000")
    for expected_encodes in (encodes + 1, encodes + 1):  # then always from the cache
        with eleven.text_to_speech.with_raw_response.convert(voice_id, text=TEXT, output_format="pcm_24000") as response:
            data = b"".join(response.data)
            check(csm_server, data, fmt.container, fmt.sample_rate, response.headers["request-id"])
        assert backend.mimi_encodes == expected_encodes
    assert voice_id in csm_server.engine.status.backend["voices_prefilled"]

    # The OpenAI dialect can use the cloned voice by id too.
    response = openai.OpenAI(base_url=f"{csm_server.url}/v1", api_key="x").audio.speech.with_raw_response.create(
        model="tts-1", voice=voice_id, input="Cloned.", response_format="wav")
    assert decode(response.content, "wav").rms > 0.01

    eleven.voices.delete(voice_id)
    with pytest.raises(ApiError) as info:
        eleven.voices.get(voice_id)
    assert info.value.status_code == 404
    # Its prompt codes and KV prefix are evicted on the inference thread (it kept them before).
    wait_until(lambda: voice_id not in csm_server.engine.status.backend["voices_prefilled"])


def test_health_and_metrics_never_reach_the_model_from_a_request_thread(csm_server, monkeypatch):
    """Scraping while CSM generates reads the published status: the framework (MLX, torch) is
    only driven by the inference thread (request threads calling MLX raced it and read dicts
    it was changing)."""
    import threading

    runtime_type = type(csm_server.engine.backend.runtime)
    callers = set()
    real = runtime_type.memory

    def spy(self):
        callers.add(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(runtime_type, "memory", spy)
    long_text = " ".join(f"Sentence number {n}." for n in range(12))
    speaking = threading.Thread(target=requests.post, args=(f"{csm_server.url}/v1/audio/speech",),
                                kwargs={"json": {"model": "tts-1", "voice": "nova", "input": long_text}})
    speaking.start()
    while speaking.is_alive():
        assert requests.get(f"{csm_server.url}/health").status_code == 200
        assert requests.get(f"{csm_server.url}/metrics").status_code == 200
    speaking.join()
    assert callers <= {"inference"} and "inference" in callers


@pytest.mark.parametrize("name", BACKENDS)
def test_random_weights_server_says_so(tmp_path, name):
    settings = tiny_settings_for(name, tmp_path, model_path=None, random_weights="tiny")
    with live_server(settings, backend=backend_for(name, settings, max_frames_per_sentence=3)) as server:
        body = requests.get(f"{server.url}/health").json()
        assert "RANDOM WEIGHTS" in body["model"]["warning"]
        assert body["model"]["id"] == "random-weights:tiny"
        response = requests.post(f"{server.url}/v1/audio/speech",
                                 json={"model": "tts-1", "voice": "nova", "input": "Noise.", "response_format": "wav"})
        assert response.status_code == 200
        assert decode(response.content, "wav").seconds == pytest.approx(3 * 0.08, abs=0.01)


@pytest.mark.parametrize("name", BACKENDS)
def test_say_with_csm_exits_cleanly(tmp_path, name):
    """The inference thread's MLX streams are released: no abort (exit 134) at interpreter exit."""
    import subprocess
    import sys

    if name == "csm-torch":
        pytest.importorskip("torch")
    out = tmp_path / "noise.wav"
    env = {"CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "BACKEND": name}
    done = subprocess.run([sys.executable, "-m", "sesame_server", "--env-file", str(tmp_path / "none.env"), "say",
                           "Hi.", "-o", str(out), "--random-weights"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    assert decode(out.read_bytes(), "wav").seconds > 0


def test_a_voice_whose_prompt_overfills_the_window_is_refused_at_upload(csm_server):
    """A transcript the model's window cannot hold next to its recording is a 400 at upload,
    with nothing stored: before, it was stored and every request with it was a 503."""
    rng = np.random.default_rng(1)
    seconds = np.arange(24000 * 29) / 24000
    audio = (0.3 * np.sin(2 * np.pi * 160 * seconds) * (1 + 0.2 * rng.standard_normal(len(seconds)))).astype(np.float32)
    upload = io.BytesIO()
    soundfile.write(upload, audio, 24000, format="WAV")
    letters = np.array(list("qxzjkvwy"))
    transcript = " ".join("".join(rng.choice(letters, 7)) for _ in range(240))  # ~1900 characters, ~1 token each
    voices_dir = csm_server.app.extensions["sesame_tts"].settings.voices_dir
    before = sorted(voices_dir.iterdir()) if voices_dir.is_dir() else []
    response = requests.post(f"{csm_server.url}/v1/voices/add", data={"name": "Too long", "transcript": transcript},
                             files=[("files", ("long.wav", upload.getvalue()))])
    detail = response.json()["detail"]
    assert response.status_code == 400 and detail["status"] == "voice_unusable", response.text
    assert "window" in detail["message"]
    assert (sorted(voices_dir.iterdir()) if voices_dir.is_dir() else []) == before


def test_a_reply_streamed_in_pieces_continues_one_utterance(csm_server, eleven):
    """stream-input with CSM: each piece of a context is conditioned on the pieces before
    (the conversation-continuation path), not a cold start; each context is its own."""
    from tests.ws_client import open_socket, read_until_final, send, ws_url

    voice_id = next(v.voice_id for v in eleven.voices.get_all().voices if "Max" in v.name)
    before = set(csm_server.jobs)
    with open_socket(ws_url(csm_server.url, voice_id, "output_format=pcm_24000")) as ws:
        for context_id in ("reply", "other"):
            send(ws, text=" ", context_id=context_id)
        for sentence in ("Hello there. ", "This is the second piece. ", "And a third one. "):
            send(ws, text=sentence, context_id="reply", flush=True)
        send(ws, text="Unrelated. ", context_id="other", flush=True)
        for context_id in ("reply", "other"):
            send(ws, text="", context_id=context_id, flush=True)
            send(ws, context_id=context_id, close_context=True)
        received = read_until_final(ws, {"reply", "other"})
    wait_until(lambda: len(set(csm_server.jobs) - before) == 4)
    jobs = sorted((csm_server.jobs[r] for r in set(csm_server.jobs) - before), key=lambda job: job.sequence)
    assert [job.request.text for job in jobs] == ["Hello there.", "This is the second piece.", "And a third one.",
                                                 "Unrelated."]
    assert [job.context_turns for job in jobs] == [0, 1, 2, 0]
    assert [len(job.request.context) > 0 for job in jobs] == [False, True, True, False]
    decoded = decode(bytes(received.audio["reply"]), "pcm", 24000)
    assert_speech(decoded, sample_rate=24000, seconds=sum(job.audio_seconds for job in jobs[:3]))


def test_a_dialogue_is_one_conversation_each_line_in_its_voice(csm_server):
    """CSM: the lines are one conversation; each line's prefill holds the lines before it,
    its own voice as speaker 0 and the other as speaker 1."""
    lines = [("Hello there.", "conversationala"), ("Hi! How are you?", "conversationalb"),
             ("Very well, thanks.", "conversationala")]
    body = {"inputs": [{"text": text, "voice_id": voice} for text, voice in lines]}
    before = set(csm_server.jobs)
    response = requests.post(f"{csm_server.url}/v1/text-to-dialogue?output_format=pcm_24000", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Context-Turns"] == "0,1,2"
    wait_until(lambda: len(set(csm_server.jobs) - before) == 3)
    jobs = sorted((csm_server.jobs[r] for r in set(csm_server.jobs) - before), key=lambda job: job.sequence)
    assert [job.request.voice for job in jobs] == ["conversational_a", "conversational_b", "conversational_a"]
    # one context segment per sentence spoken: line 2 is two sentences
    assert [[turn.speaker for turn in job.request.context] for job in jobs] == [[], [1], [0, 1, 1]]
    assert jobs[2].prefill_tokens > jobs[0].prefill_tokens
    assert_speech(decode(response.content, "pcm", 24000), sample_rate=24000,
                  seconds=sum(job.audio_seconds for job in jobs))
