"""WebSocket slots with API_KEY set (issue #22, item 3).

A socket whose key is still to come (`xi_api_key` in its first message) waits in a small
pool of its own (MAX_PENDING_WEBSOCKETS) and must show the key within
WS_FIRST_MESSAGE_SECONDS; only then does it take one of the MAX_WEBSOCKETS slots. So
silent keyless sockets never lock out the clients that have the key.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sesame_server.config import Settings, SettingsError, load_settings
from tests.fakes import FakeBackend, wait_until
from tests.live import live_server
from tests.ws_client import open_socket, read_until_final, send, ws_url

KEY = "s3cret"
QUERY = "output_format=pcm_24000&inactivity_timeout=180"  # LiveKit's timeout: not what closes them


@pytest.fixture()
def keyed(tmp_path):
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4, api_key=KEY,
                        max_websockets=2, max_pending_websockets=2, ws_first_message_seconds=2.0)
    with live_server(settings, backend=FakeBackend(frames=2)) as server:
        yield server


def _speak(ws, **first) -> bytes:
    send(ws, text=" ", context_id="c", **first)
    send(ws, text="Hello. ", context_id="c")
    send(ws, text="", context_id="c", flush=True)
    send(ws, context_id="c", close_context=True)
    return bytes(read_until_final(ws, {"c"}).audio["c"])


def _closed_with(ws) -> tuple[dict, int]:
    """The error message the server sends, then its close code (well before any 180 s timer)."""
    error = json.loads(ws.recv(timeout=30))
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return error, closed.value.rcvd.code


def test_silent_keyless_sockets_never_lock_out_clients_with_the_key(keyed):
    url = ws_url(keyed.url, "fake_voice", QUERY)
    with ExitStack() as stack:
        silent = [stack.enter_context(open_socket(url)) for _ in range(2)]  # MAX_WEBSOCKETS of them, keyless
        with pytest.raises(InvalidStatus) as refused:  # the pending pool is full...
            open_socket(url)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["detail"]["status"] == "system_busy"
        # ...but both real slots are free for clients that show the key at the upgrade.
        with open_socket(url, **{"xi-api-key": KEY}) as first, open_socket(f"{url}&authorization={KEY}") as second:
            assert _speak(first) and _speak(second)
        for ws in silent:  # closed after WS_FIRST_MESSAGE_SECONDS, as a first message without the key is
            body, code = _closed_with(ws)
            assert (body["error"], body["code"], code) == ("invalid_api_key", 1008, 1008)
            assert "xi_api_key" in body["message"]
    wait_until(lambda: len(keyed.app.extensions["sesame_tts"].sockets) == 0)  # their slots are back
    with open_socket(url) as ws:  # the key in the first message, in time: as before
        assert _speak(ws, xi_api_key=KEY)


@pytest.mark.parametrize("multi", [True, False])
def test_a_socket_waiting_for_its_key_is_closed_after_the_first_message_deadline(keyed, multi):
    """multi-stream-input with no open context used to wait inactivity_timeout (180 s here);
    stream-input never closed a socket that sent nothing."""
    with open_socket(ws_url(keyed.url, "fake_voice", QUERY, multi=multi)) as ws:
        body, code = _closed_with(ws)
    assert (body["error"], code) == ("invalid_api_key", 1008)


def test_a_key_shown_when_every_slot_is_taken_is_told_to_try_again(keyed):
    url = ws_url(keyed.url, "fake_voice", QUERY)
    with open_socket(url, **{"xi-api-key": KEY}) as a, open_socket(url, **{"xi-api-key": KEY}) as b:
        with open_socket(url) as late:
            send(late, text=" ", context_id="c", xi_api_key=KEY)
            body, code = _closed_with(late)
        assert (body["error"], body["code"], code) == ("system_busy", 1013, 1013)
        assert _speak(a) and _speak(b)  # the clients holding the slots are untouched


def test_a_silent_socket_with_the_key_closes_after_its_inactivity_timeout(keyed):
    """stream-input never closed a socket that sent nothing, key or not."""
    url = ws_url(keyed.url, "fake_voice", "inactivity_timeout=1", multi=False)
    with open_socket(url, **{"xi-api-key": KEY}) as ws:
        body, code = _closed_with(ws)
    assert (body["error"], code) == ("input_timeout_exceeded", 1008)


def test_the_settings_are_read_and_checked():
    settings = load_settings({"MAX_PENDING_WEBSOCKETS": "3", "WS_FIRST_MESSAGE_SECONDS": "4.5"}, env_file=None)
    assert (settings.max_pending_websockets, settings.ws_first_message_seconds) == (3, 4.5)
    for name, value in (("WS_FIRST_MESSAGE_SECONDS", "0"), ("MAX_PENDING_WEBSOCKETS", "-1")):
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value}, env_file=None)


def test_no_pending_pool_means_the_key_must_come_with_the_upgrade(tmp_path):
    settings = Settings(backend="piper", cache_dir=tmp_path, warmup_on_start=False, threads=4, api_key=KEY,
                        max_pending_websockets=0)
    with live_server(settings, backend=FakeBackend(frames=2)) as server:
        url = ws_url(server.url, "fake_voice", QUERY)
        with pytest.raises(InvalidStatus) as refused:
            open_socket(url)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["detail"]["status"] == "invalid_api_key"
        with open_socket(url, **{"xi-api-key": KEY}) as ws:
            assert _speak(ws)
