"""Conversation memory over HTTP: the real server on the tiny CSM, the official SDKs as clients.

What the backend received is read off the finished job (`server.job(id).request`): the
exact SpeechRequest the engine handed to `CsmBackend.stream`.
"""

from __future__ import annotations

import uuid

import numpy as np
import openai
import pytest
import requests
from elevenlabs import ElevenLabs

from sesame_server.backends.csm import CsmBackend
from tests.csm_tiny import tiny_settings
from tests.fakes import FakeClock
from tests.live import live_server

FRAMES = 8
GAP = 4.0  # CONTEXT_SESSION_GAP_SECONDS on this server
VOICE = "conversational_b"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("cache"), threads=8, context_session_gap_seconds=GAP)
    with live_server(settings, backend=CsmBackend(settings, max_frames_per_sentence=FRAMES)) as live:
        live.clock = FakeClock()  # session gaps: moved by hand, so no test waits for one
        live.app.extensions["sesame_tts"].turns.clock = live.clock
        yield live


def speak(server, text: str, *, session: str | None = None, api_key: str = "k", voice: str = VOICE, **body):
    """One OpenAI-dialect request; returns (request id, response headers)."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)
    headers = {"X-Session-Id": session} if session else None
    response = client.audio.speech.with_raw_response.create(
        model="tts-1", voice=voice, input=text, response_format="pcm", extra_headers=headers, extra_body=body or None)
    assert len(response.content) > 0
    return response.headers["x-request-id"], response.headers


def codes_of(server, request_id: str) -> list[np.ndarray]:
    return [codes for _, codes in server.job(request_id).segments]


def context_codes(server, request_id: str) -> list[np.ndarray]:
    return [turn.codes for turn in server.job(request_id).request.context if turn.codes is not None]


def assert_same_codes(got: list, expected: list) -> None:
    assert len(got) == len(expected) and len(expected) > 0
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_talk_mode_requests_carry_the_previous_turns(server):
    """Plain sequential requests (OpenClaw Talk mode): no ids, no headers, nothing to change."""
    key = uuid.uuid4().hex  # this client's (API key, address) session
    first, headers1 = speak(server, "I just got promoted!", api_key=key)
    assert headers1["x-context-turns"] == "0"
    second, headers2 = speak(server, "Congratulations, when did you find out?", api_key=key)
    assert_same_codes(context_codes(server, second), codes_of(server, first))
    assert headers2["x-context-turns"] == "1"
    # Turn 2 continued turn 1's cached state: it prefilled its own text (+ turn 1's unfed tail).
    text_tokens = server.job(second).generation.text_tokens
    assert text_tokens <= int(headers2["x-prefill-tokens"]) <= text_tokens + 2
    assert int(headers1["x-prefill-tokens"]) > 0

    third, headers3 = speak(server, "That is wonderful news.", api_key=key)
    assert headers3["x-context-turns"] == "2"
    assert [t.turn_id for t in server.job(third).request.context] == [first, second]


def test_other_sessions_voices_and_clients_start_fresh(server):
    key = uuid.uuid4().hex
    speak(server, "Only for me.", api_key=key)
    other_voice, headers = speak(server, "Different voice.", api_key=key, voice="conversational_a")
    assert headers["x-context-turns"] == "0" and not server.job(other_voice).request.context
    other_client, headers = speak(server, "Another client.", api_key=uuid.uuid4().hex)
    assert headers["x-context-turns"] == "0"
    a = uuid.uuid4().hex
    speak(server, "Session A speaking.", session=a)
    b_turn, headers = speak(server, "Session B speaking.", session=uuid.uuid4().hex)
    assert headers["x-context-turns"] == "0"
    a_turn, headers = speak(server, "Session A again.", session=a)
    assert headers["x-context-turns"] == "1"


def test_a_long_pause_starts_a_new_conversation(server):
    key = uuid.uuid4().hex
    speak(server, "Before the pause.", api_key=key)
    server.clock.advance(GAP + 0.5)
    after, headers = speak(server, "After the pause.", api_key=key)
    assert headers["x-context-turns"] == "0" and not server.job(after).request.context


def test_explicit_context_with_audio_refs_and_user_lines(server):
    session = uuid.uuid4().hex
    first, _ = speak(server, "Congratulations! When did you find out?", session=session, audio_ref="turn_002")
    explicit, headers = speak(server, "That's really interesting, tell me more.", session=session, context=[
        {"text": "I just got promoted!"},  # the user's side: text only
        {"text": "Congratulations! When did you find out?", "audio_ref": "turn_002"},
        {"text": "Yesterday, at the team meeting."},
    ])
    context = server.job(explicit).request.context
    # The two-sentence turn comes back as the two segments it was generated as.
    assert [(t.speaker, t.codes is not None) for t in context] == [(1, False), (0, True), (0, True), (1, False)]
    assert {t.turn_id for t in context} == {None, first}
    assert_same_codes(context_codes(server, explicit), codes_of(server, first))
    assert headers["x-context-turns"] == "3"


def test_elevenlabs_previous_request_ids_resolve_to_the_cached_turn(server):
    client = ElevenLabs(base_url=server.url, api_key=uuid.uuid4().hex)
    voice_id = next(v.voice_id for v in client.voices.get_all().voices if "Max" in v.name)
    ids = []
    for text in ("The first thing I said.", "The second thing I said."):
        with client.text_to_speech.with_raw_response.convert(voice_id, text=text, output_format="pcm_24000") as r:
            b"".join(r.data)
            ids.append(r.headers["request-id"])
    with client.text_to_speech.with_raw_response.convert(
            voice_id, text="Picking up from the first.", output_format="pcm_24000",
            previous_request_ids=[ids[0]]) as response:
        b"".join(response.data)
        headers = response.headers
    job = server.job(headers["request-id"])
    assert {t.turn_id for t in job.request.context} == {ids[0]}
    assert_same_codes(context_codes(server, job.request.request_id), codes_of(server, ids[0]))
    assert headers["x-context-turns"] == "1"

    # previous_text that this client's voice spoke resolves to that turn's audio too.
    with client.text_to_speech.with_raw_response.stream(
            voice_id, text="And on from the second.", output_format="pcm_24000",
            previous_text="The second thing I said.") as response:
        b"".join(response.data)
        job = server.job(response.headers["request-id"])
    assert {t.turn_id for t in job.request.context} == {ids[1]} and job.request.previous_text is None

    # Turns remember the spoken form ("five dollars"); previous_text is what the client wrote ("$5").
    with client.text_to_speech.with_raw_response.convert(voice_id, text="It costs **$5**.",
                                                         output_format="pcm_24000") as r:
        b"".join(r.data)
        priced = r.headers["request-id"]
    assert server.job(priced).request.text == "It costs five dollars."
    with client.text_to_speech.with_raw_response.convert(
            voice_id, text="That is cheap.", output_format="pcm_24000", previous_text="It costs **$5**.") as r:
        b"".join(r.data)
        job = server.job(r.headers["request-id"])
    assert {t.turn_id for t in job.request.context} == {priced}


def test_sessions_cannot_reference_each_others_turns(server):
    mine, _ = speak(server, "A private turn.", session="alice", audio_ref="secret")
    for field, value in (("context", [{"text": "x", "audio_ref": "secret"}]),
                         ("context", [{"text": "x", "audio_ref": mine}]),
                         ("previous_request_ids", [mine])):
        theirs, headers = speak(server, "Trying to peek.", session="mallory", **{field: value})
        assert all(t.codes is None for t in server.job(theirs).request.context)
        assert all(t.turn_id != mine for t in server.job(theirs).request.context)
    unknown, headers = speak(server, "Unknown ids are ignored.", session="alice", previous_request_ids=["nope"])
    assert headers["x-context-turns"] == "0"


@pytest.mark.parametrize("body, param, loc", [
    ({"context": "not a list"}, "context", ["context"]),
    ({"context": [{"text": 5}]}, "context[0].text", ["context", 0, "text"]),
    ({"context": [{"text": "hi", "speaker": "one"}]}, "context[0].speaker", ["context", 0, "speaker"]),
    ({"context": [{"text": "hi", "speaker": 12}]}, "context[0].speaker", ["context", 0, "speaker"]),
    ({"context": [{}]}, "context[0]", ["context[0]"]),  # neither text nor audio_ref
    ({"context": [{"text": "hi"}] * 21}, "context", ["context"]),
    ({"audio_ref": ["x"]}, "audio_ref", ["audio_ref"]),
    ({"audio_ref": "x" * 129}, "audio_ref", ["audio_ref"]),
    ({"previous_request_ids": "abc"}, "previous_request_ids", ["previous_request_ids"]),
])
def test_bad_context_fields_get_errors_in_each_dialect(server, body, param, loc):
    response = requests.post(f"{server.url}/v1/audio/speech",
                             json={"model": "tts-1", "voice": "alloy", "input": "Hi.", **body})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    voice_id = requests.get(f"{server.url}/v1/voices").json()["voices"][0]["voice_id"]
    response = requests.post(f"{server.url}/v1/text-to-speech/{voice_id}", json={"text": "Hi.", **body})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", *loc]
    assert requests.get(f"{server.url}/health").json()["status"] == "ok"


def test_health_and_metrics_report_the_context_cache(server):
    speak(server, "Counting turns.", session=uuid.uuid4().hex)
    health = requests.get(f"{server.url}/health").json()
    assert health["context_cache_size"] >= 1 and health["context"]["enabled"]
    assert health["model"]["context_kv_hits"] >= 1
    metrics = requests.get(f"{server.url}/metrics").text
    turns = [line for line in metrics.splitlines() if line.startswith("sesame_tts_context_cache_turns ")]
    assert turns and float(turns[0].split()[1]) == health["context_cache_size"]
    assert 'sesame_tts_context_lookups_total{result="hit"}' in metrics
    assert 'sesame_tts_prefill_tokens_count{dialect="openai"}' in metrics


def test_context_off_means_no_memory(tmp_path):
    settings = tiny_settings(tmp_path, context_enabled=False)
    with live_server(settings, backend=CsmBackend(settings, max_frames_per_sentence=3)) as off:
        speak(off, "One.")
        second, headers = speak(off, "Two.", previous_request_ids=["x"])
        assert headers["x-context-turns"] == "0" and not off.job(second).request.context
        assert requests.get(f"{off.url}/health").json()["context_cache_size"] == 0


def test_request_log_lines_say_what_conditioned_the_audio(server, caplog):
    import logging

    from sesame_server.ops.request_log import REQUEST_LOGGER
    from tests.fakes import wait_until

    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    session = uuid.uuid4().hex
    speak(server, "The first line.", session=session)
    second, headers = speak(server, "The second line.", session=session)

    def line():
        return next((r.sesame_fields for r in caplog.records
                     if getattr(r, "sesame_fields", {}).get("request_id") == second), None)

    wait_until(lambda: line() is not None)
    assert line()["context_turns"] == 1
    assert line()["prefill_tokens"] == int(headers["x-prefill-tokens"])


def test_a_session_id_is_owned_by_its_caller(server):
    """Another key sending Alice's X-Session-Id sees what a new session sees: no turns, and no
    sign that the session exists."""
    session = uuid.uuid4().hex
    first, _ = speak(server, "Alice speaking.", session=session, api_key="alice")
    other, headers = speak(server, "Mallory speaking.", session=session, api_key="mallory")
    assert headers["x-context-turns"] == "0" and not server.job(other).request.context
    again, headers = speak(server, "Alice again.", session=session, api_key="alice")
    assert headers["x-context-turns"] == "1"  # hers only: Mallory's turn went to a session of its own
    assert {t.turn_id for t in server.job(again).request.context} == {first}


def test_a_caller_without_a_key_is_known_by_its_address(server):
    import httpx

    session = uuid.uuid4().hex

    def post(address: str, text: str) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60) as client:
            response = client.post(f"{server.url}/v1/audio/speech", headers={"X-Session-Id": session},
                                   json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"})
        assert response.status_code == 200, response.text
        return response

    post("127.0.0.1", "From the first machine.")
    assert post("127.0.0.2", "From another machine.").headers["x-context-turns"] == "0"
    assert post("127.0.0.1", "The first machine again.").headers["x-context-turns"] == "1"


def test_the_key_in_http_basic_is_the_same_caller_as_in_bearer(server):
    """The playground sends the key as HTTP Basic's password (any user name), as the key check reads it."""
    import base64

    session = uuid.uuid4().hex
    speak(server, "Through the SDK.", session=session, api_key="alice")
    basic = base64.b64encode(b"anyone:alice").decode()
    response = requests.post(f"{server.url}/v1/audio/speech", timeout=60,
                             headers={"X-Session-Id": session, "Authorization": f"Basic {basic}"},
                             json={"model": "tts-1", "voice": "alloy", "input": "Through the page.",
                                   "response_format": "pcm"})
    assert response.status_code == 200 and response.headers["x-context-turns"] == "1"
