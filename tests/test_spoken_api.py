"""The text front end through the APIs, on the embedded voice: what reaches the model, what
the timestamps cover, and what `off` leaves alone."""

from __future__ import annotations

import requests

from tests.audio_check import decode

VOICE = "JoeEmbeddedPiper"
REPLY = "## Your order\n\n- **Total:** $12.50\n- Ships on 2024-12-01 🎉\n\nTrack it at https://shop.example.com."
SPOKEN = ("Your order. Total: twelve dollars and fifty cents. Ships on December first, twenty twenty-four. "
          "Track it at shop dot example dot com.")


def _job(server, response):
    return server.job(response.headers["request-id"])


def test_both_dialects_speak_the_normalized_text(piper_server):
    eleven = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}", json={"text": REPLY})
    assert _job(piper_server, eleven).request.text == SPOKEN
    openai = requests.post(f"{piper_server.url}/v1/audio/speech", json={"model": "tts-1", "input": REPLY,
                                                                         "voice": "alloy"})
    assert _job(piper_server, openai).request.text == SPOKEN


def test_off_is_the_old_behaviour_byte_for_byte(piper_server):
    response = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}",
                             json={"text": REPLY, "apply_text_normalization": "off"})
    assert response.status_code == 200 and _job(piper_server, response).request.text == REPLY


def test_the_audio_tracks_the_spoken_form_not_the_markup(piper_server):
    """Markdown normalized takes as long as its spoken form said plainly: no seconds of
    'asterisk asterisk' or URL letters."""
    normalized = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}?output_format=pcm_24000",
                               json={"text": REPLY, "seed": 1})
    plain = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}?output_format=pcm_24000",
                          json={"text": SPOKEN, "seed": 1, "apply_text_normalization": "off"})
    said, reference = decode(normalized.content, "pcm", 24000), decode(plain.content, "pcm", 24000)
    assert abs(said.seconds - reference.seconds) <= 0.05 * reference.seconds


def test_timestamps_cover_the_text_as_sent_and_as_spoken(piper_server):
    body = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}/with-timestamps",
                         json={"text": REPLY}).json()
    assert "".join(body["alignment"]["characters"]) == REPLY
    assert "".join(body["normalized_alignment"]["characters"]) == SPOKEN
    ends = body["alignment"]["character_end_times_seconds"]
    assert ends == sorted(ends) and ends[-1] <= body["normalized_alignment"]["character_end_times_seconds"][-1]
    lines = requests.post(f"{piper_server.url}/v1/text-to-speech/{VOICE}/stream/with-timestamps",
                          json={"text": REPLY}).text.splitlines()
    import json

    chunks = [json.loads(line) for line in lines]
    assert "".join("".join(c["alignment"]["characters"]) for c in chunks if c["alignment"]) == REPLY
    assert "".join("".join(c["normalized_alignment"]["characters"]) for c in chunks
                   if c["normalized_alignment"]) == SPOKEN


def test_the_normalize_route_says_what_will_be_spoken(piper_server):
    said = requests.post(f"{piper_server.url}/v1/text/normalize", json={"text": REPLY}).json()
    assert said == {"text": REPLY, "spoken": SPOKEN, "changed": True}
    off = requests.post(f"{piper_server.url}/v1/text/normalize",
                        json={"text": REPLY, "apply_text_normalization": "off"}).json()
    assert off["spoken"] == REPLY and not off["changed"]
    bad = requests.post(f"{piper_server.url}/v1/text/normalize", json={"text": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "text"
    unknown = requests.post(f"{piper_server.url}/v1/text/normalize", json={"text": REPLY, "voice_id": "nobody"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "voice_id"


def test_a_voice_can_have_its_own_default(tmp_path):
    """VOICE_TEXT_NORMALIZATION=JoeEmbeddedPiper=off: that voice's text reaches the model as
    written (both dialects), other requests and an explicit `on` are still normalized."""
    from tests.conftest import piper_settings
    from tests.live import live_server

    with live_server(piper_settings(tmp_path, voice_text_normalization=((VOICE, "off"),))) as server:
        said = requests.post(f"{server.url}/v1/text/normalize", json={"text": REPLY, "voice_id": VOICE}).json()
        assert said["spoken"] == REPLY and not said["changed"]
        assert requests.post(f"{server.url}/v1/text/normalize", json={"text": REPLY}).json()["spoken"] == SPOKEN
        for name in ("joe", "alloy"):  # its local id, an OpenAI voice it stands for
            assert requests.post(f"{server.url}/v1/text/normalize",
                                 json={"text": REPLY, "voice_id": name}).json()["spoken"] == REPLY
        raw = requests.post(f"{server.url}/v1/text-to-speech/{VOICE}?output_format=pcm_24000", json={"text": "$5"})
        assert raw.status_code == 200 and _job(server, raw).request.text == "$5"
        forced = requests.post(f"{server.url}/v1/text-to-speech/{VOICE}?output_format=pcm_24000",
                               json={"text": "$5", "apply_text_normalization": "on"})
        assert _job(server, forced).request.text == "five dollars."
