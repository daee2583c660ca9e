"""A voice deleted while a request for it was on its way (on this node or another): the
client hears that it was deleted, with no server path in the answer, and the server logs
one line, not a traceback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import requests

from sesame_server.backends.base import VoiceUnavailable
from sesame_server.voices.custom import CustomVoiceStore
from tests.conftest import piper_settings
from tests.csm_tiny import backend_for, make_request, speak, tiny_settings_for
from tests.fakes import FakeBackend
from tests.live import live_server


def tone(seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(24000 * seconds)) / 5)).astype(np.float32)


@pytest.fixture(scope="module")
def csm(tmp_path_factory):
    backend = backend_for("csm", tiny_settings_for("csm", tmp_path_factory.mktemp("cache")), max_frames_per_sentence=2)
    backend.load()
    yield backend
    backend.unload()


@pytest.mark.parametrize("gone", ["the voice", "its recording"])
def test_a_voice_deleted_before_the_backend_reads_it_is_said_without_a_path(csm, tmp_path, gone):
    store = CustomVoiceStore(tmp_path / "voices")
    voice_id = store.add("Doomed", tone()).voice_id
    reference = store.reference(voice_id)  # the request resolved the voice ...
    if gone == "the voice":  # ... then it was deleted (another node, or DELETE on this one)
        store.delete(voice_id)
    else:
        (tmp_path / "voices" / voice_id / "reference.wav").unlink()
    with pytest.raises(VoiceUnavailable) as refused:
        speak(csm, make_request("Hi.", voice=voice_id, reference=reference))
    message = str(refused.value)
    assert voice_id in message and str(tmp_path) not in message and "reference.wav" not in message
    assert ("was deleted" in message) == (gone == "the voice")


def test_a_voice_unavailable_at_generation_is_one_log_line_not_a_traceback(tmp_path, caplog):
    backend = FakeBackend(frames=2, can_clone=True)
    with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=backend) as server:
        added = requests.post(f"{server.url}/v1/voices/add", data={"name": "Mine"},
                              files=[("files", ("ref.wav", _wav()))]).json()["voice_id"]
        (tmp_path / "voices" / added / "reference.wav").unlink()  # gone under the server's feet
        caplog.clear()
        caplog.set_level(logging.INFO, logger="sesame_server.engine.engine")
        answer = requests.post(f"{server.url}/v1/audio/speech", json={"input": "Hi.", "voice": added})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "voice_unusable"
    engine = [r for r in caplog.records if r.name == "sesame_server.engine.engine"]
    assert not [r.getMessage() for r in engine if r.levelno > logging.INFO or r.exc_info]
    assert any(added in r.getMessage() for r in engine)  # said, in one line


def _wav() -> bytes:
    import io

    import soundfile

    out = io.BytesIO()
    soundfile.write(out, tone(2.0), 24000, format="WAV")
    return out.getvalue()


def test_unreadable_stored_files_are_reported_without_a_path(tmp_path):
    store = CustomVoiceStore(tmp_path / "voices")
    voice_id = store.add("Locked", tone()).voice_id
    (tmp_path / "voices" / voice_id / "reference.wav").write_bytes(b"RIFF not audio")
    voices, [broken] = store.scan()
    assert voices == [] and "reference.wav" in broken.reason and str(tmp_path) not in broken.reason
