"""Voice ids that work everywhere: any backend's built-in voice, by local or ElevenLabs id,
and OpenAI's names resolve on every backend; a typo still gets the 400 listing voices."""

from __future__ import annotations

import logging

import pytest
import requests

from sesame_server.backends.base import Voice
from sesame_server.voices.catalogue import VoiceCatalogue, VoiceNotFound

PIPER = VoiceCatalogue([Voice(id="joe", name="Joe", elevenlabs_id="JoeEmbeddedPiper")], "conversational_b")
CSM = VoiceCatalogue([Voice(id="conversational_a", name="A"), Voice(id="conversational_b", name="B")],
                     "conversational_b")


@pytest.mark.parametrize("name, on_piper, on_csm", [
    ("conversational_a", "joe", "conversational_a"), ("conversationalb", "joe", "conversational_b"),
    ("Conversational_B", "joe", "conversational_b"), ("joe", "joe", "conversational_b"),
    ("JoeEmbeddedPiper", "joe", "conversational_b"), ("alloy", "joe", "conversational_a"),
    ("echo", "joe", "conversational_b"),
])
def test_every_backends_voices_resolve_on_every_backend(name, on_piper, on_csm, caplog):
    caplog.set_level(logging.INFO)
    assert PIPER.resolve(name).id == on_piper and CSM.resolve(name).id == on_csm
    if name.lower() not in ("joe", "joeembeddedpiper") and "conversational" in name.lower():
        assert f"Voice {name} is not offered by this backend; using joe" in caplog.text


@pytest.mark.parametrize("typo", ["conversatinal_b", "jo", "alloyy"])
def test_a_typo_is_still_not_found(typo):
    for catalogue in (PIPER, CSM):
        with pytest.raises(VoiceNotFound):
            catalogue.resolve(typo)


def test_the_readme_voices_work_on_the_embedded_voice(piper_server):
    speech = requests.post(f"{piper_server.url}/v1/audio/speech",
                           json={"model": "csm-1b", "voice": "conversational_b", "input": "Hello."})
    assert speech.status_code == 200 and speech.content
    tts = requests.post(f"{piper_server.url}/v1/text-to-speech/conversational_b", json={"text": "Hello."})
    assert tts.status_code == 200 and tts.content
    typo = requests.post(f"{piper_server.url}/v1/audio/speech",
                         json={"model": "csm-1b", "voice": "conversatinal_b", "input": "Hello."})
    assert typo.status_code == 400 and "joe" in typo.json()["error"]["message"]
