"""POST /v1/voices/add and DELETE /v1/voices/{id}: every bad upload is refused before anything
is stored, a stored voice speaks, and deleting it forgets everything cached for it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
import soundfile

from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

RATE = 24000


def wav(seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, (amplitude * np.sin(2 * np.pi * 180 * t)).astype(np.float32), RATE, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    backend = FakeBackend(frames=2, can_clone=True)
    with live_server(piper_settings(tmp_path_factory.mktemp("cache"), warmup_on_start=False), backend=backend) as live:
        live.backend = backend
        yield live


def add(server, data: dict | None = None, files: list | None = None) -> requests.Response:
    return requests.post(f"{server.url}/v1/voices/add", data={"name": "Mine"} if data is None else data,
                         files=[("files", ("ref.wav", wav(2.0)))] if files is None else files)


def stored(server) -> list:
    root = server.app.extensions["sesame_tts"].settings.voices_dir
    return sorted(root.iterdir()) if root.is_dir() else []


@pytest.mark.parametrize("data, files, status, code", [
    ({}, None, 422, "missing"),  # no name
    ({"name": "   "}, None, 422, "missing"),
    ({"name": "x" * 101}, None, 422, "string_too_long"),
    ({"name": "Mine\x00"}, None, 422, "value_error"),
    ({"name": "Mine", "transcript": " ".join(["word"] * 20000)}, None, 422, "string_too_long"),
    ({"name": "Mine", "description": "d" * 1001}, None, 422, "string_too_long"),
    ({"name": "Mine", "labels": "[" * 50000 + "]" * 50000}, None, 422, "json_invalid"),  # was a RecursionError
    ({"name": "Mine", "labels": '{"a": {"b": "c"}}'}, None, 422, "string_type"),
    ({"name": "Mine", "transcript": "unusable by the model"}, None, 400, "voice_unusable"),
    (None, [], 422, "missing"),  # no files
    (None, [("files", ("big.wav", b"\0" * (20 * 1024 * 1024 + 1)))], 413, "file_too_large"),
    (None, [("files", ("notes.txt", b"this is not audio at all"))], 400, "invalid_audio"),
    (None, [("files", ("short.wav", wav(0.5)))], 400, "audio_too_short"),
    (None, [("files", ("long.wav", wav(31.0)))], 400, "audio_too_long"),
    (None, [("files", ("silent.wav", wav(2.0, amplitude=0.0)))], 400, "invalid_audio"),
    ({"name": "Mine", "labels": "{not json"}, None, 422, "json_invalid"),
    ({"name": "Mine", "labels": "[1, 2]"}, None, 422, "dict_type"),
])
def test_bad_uploads_are_refused_and_store_nothing(server, data, files, status, code):
    before = stored(server)
    response = add(server, data, files)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert (detail[0]["type"] if status == 422 else detail["status"]) == code
    assert stored(server) == before


def test_a_cloned_voice_speaks_and_deleting_it_forgets_it(server):
    response = add(server, {"name": "Mine", "labels": '{"accent": "scottish"}', "transcript": "hello"})
    assert response.status_code == 200
    voice_id = response.json()["voice_id"]
    voice = requests.get(f"{server.url}/v1/voices/{voice_id}").json()
    assert voice["category"] == "cloned" and voice["labels"] == {"accent": "scottish"}

    speech = requests.post(f"{server.url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."})
    assert speech.status_code == 200
    reference = server.backend.requests[-1].reference
    assert reference.voice_id == voice_id and reference.transcript == "hello"

    assert requests.delete(f"{server.url}/v1/voices/{voice_id}").json() == {"status": "ok"}
    assert requests.get(f"{server.url}/v1/voices/{voice_id}").status_code == 404
    assert requests.post(f"{server.url}/v1/text-to-speech/{voice_id}", json={"text": "Hi."}).status_code == 200
    assert server.backend.forgotten == [voice_id]  # evicted on the inference thread, before that request
    assert not any(path.name == voice_id for path in stored(server))


def test_a_built_in_voice_cannot_be_deleted(server):
    response = requests.delete(f"{server.url}/v1/voices/fake_voice")
    assert response.status_code == 400 and response.json()["detail"]["status"] == "voice_not_deletable"
    assert requests.get(f"{server.url}/v1/voices/fake_voice").status_code == 200
