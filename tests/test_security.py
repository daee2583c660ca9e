"""Hostile callers: a web page in the user's browser, forged headers, huge or malformed bodies.
Each gets a clear refusal in the caller's dialect, before any work, and the server goes on."""

from __future__ import annotations

import base64
import json
import socket
import threading

import pytest
import requests

from tests.conftest import piper_settings
from tests.fakes import FakeBackend
from tests.live import live_server

SPEECH = {"model": "tts-1", "voice": "fake_voice", "input": "Hi.", "response_format": "pcm"}
TTS_ROUTES = ["/v1/text-to-speech/fake_voice", "/v1/text-to-speech/fake_voice/stream",
              "/v1/text-to-speech/fake_voice/with-timestamps", "/v1/text-to-speech/fake_voice/stream/with-timestamps"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    backend = FakeBackend(frames=2, can_clone=True)
    settings = piper_settings(tmp_path_factory.mktemp("cache"), warmup_on_start=False,
                              cors_origins=("http://allowed.example",), max_body_bytes=64 * 1024)
    with live_server(settings, backend=backend) as live:
        live.backend = backend
        yield live


def raw(server, request: bytes) -> bytes:
    """Send bytes as they are (forged headers) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def openai_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code:
        assert error["code"] == code
    return error


def elevenlabs_detail(response, status: int):
    assert response.status_code == status, response.text[:300]
    return response.json()["detail"]


# -- 1. text that is not text ---------------------------------------------------------------------
@pytest.mark.parametrize("text, what", [("hello\u0000world", "U+0000"), ("\ud800 hello", "U+D800"),
                                        ("bell\u0007", "U+0007")])
def test_control_characters_and_lone_surrogates_are_refused_naming_the_field(server, text, what):
    body = json.dumps({**SPEECH, "input": text})  # json.dumps escapes the surrogate as \\ud800
    response = requests.post(f"{server.url}/v1/audio/speech", data=body, headers={"Content-Type": "application/json"})
    error = openai_error(response, 400, "invalid_value")
    assert error["param"] == "input" and what in error["message"]
    for route in TTS_ROUTES:
        response = requests.post(server.url + route, data=json.dumps({"text": text}),
                                 headers={"Content-Type": "application/json"})
        [detail] = elevenlabs_detail(response, 422)
        assert detail["loc"] == ["body", "text"] and what in detail["msg"]


def test_tabs_and_newlines_are_fine(server):
    assert requests.post(f"{server.url}/v1/audio/speech", json={**SPEECH, "input": "One.\n\tTwo.\r\n"}).status_code == 200


@pytest.mark.parametrize("route", ["/v1/audio/speech", TTS_ROUTES[0]])
def test_deeply_nested_json_is_a_4xx_not_a_recursion_error(server, route):
    deep = b'{"input": "Hi.", "text": "Hi.", "x": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    response = requests.post(server.url + route, data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422) and "levels deep" in response.text


# -- 2. bodies bounded before they are read ------------------------------------------------------
def test_an_oversized_body_is_refused_by_its_length_in_the_dialects_shape(server):
    big = json.dumps({**SPEECH, "input": "x" * 100_000})
    openai_error(requests.post(f"{server.url}/v1/audio/speech", data=big,
                               headers={"Content-Type": "application/json"}), 413, "payload_too_large")
    detail = elevenlabs_detail(requests.post(server.url + TTS_ROUTES[0], data=json.dumps({"text": "x" * 100_000}),
                                             headers={"Content-Type": "application/json"}), 413)
    assert detail["status"] == "payload_too_large"


def test_an_oversized_chunked_body_is_refused_while_reading(server):
    def chunks():
        yield b'{"model": "tts-1", "voice": "fake_voice", "input": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = requests.post(f"{server.url}/v1/audio/speech", data=chunks(), headers={"Content-Type": "application/json"})
    openai_error(response, 413)


def exchange(server, head: bytes, body: bytes = b"") -> tuple[int, dict]:
    """Send `head` and `body` while reading: a refusal may come before the body is sent (and
    the sender then meets a closed connection). The answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        def send() -> None:
            try:
                sock.sendall(head + body)
            except OSError:
                pass  # refused early: the rest is not wanted

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sock.settimeout(10)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                status_line, _, rest = answer.partition(b"\r\n")
                headers, found, content = rest.partition(b"\r\n\r\n")
                length = [int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if found and length and len(content) >= length[0]:
                    break
        except ConnectionResetError:
            pass
    assert found, f"no whole answer: {answer[:300]!r}"
    return int(status_line.split()[1]), json.loads(content)


def test_a_giant_declared_body_is_refused_before_it_is_sent_in_the_dialects_shape(server):
    """Past waitress's own limit its plain-text 413 used to answer ('exceeds max_body')."""
    for route in ("/v1/audio/speech", TTS_ROUTES[0]):
        head = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {200 * 1024 * 1024}\r\n\r\n").encode()
        status, body = exchange(server, head)  # no body follows: the answer comes anyway
        assert status == 413
        if route.startswith("/v1/audio"):
            assert body["error"]["code"] == "payload_too_large"
        else:
            assert body["detail"]["status"] == "payload_too_large"


def test_a_body_over_its_routes_limit_is_refused_before_it_is_sent(server):
    """The route's own limit (MAX_BODY_BYTES) answers at once: the server never buffers the body."""
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1024 * 1024}\r\n\r\n").encode()
    status, body = exchange(server, head, b"{" * 1000)  # the rest never comes
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_a_chunked_body_is_refused_once_it_passes_the_limit_before_it_ends(server):
    head = (b"POST /v1/text-to-speech/fake_voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(16))  # 128 KB, never terminated
    status, answer = exchange(server, head, body)
    assert status == 413 and answer["detail"]["status"] == "payload_too_large"


@pytest.mark.parametrize("size", [100 * 1024, 300 * 1024])
def test_huge_headers_get_431_in_the_dialects_shape(server, size):
    """Below waitress's 256 KB the app used to take any header; past it waitress answered plain text."""
    for route, dialect in (("/v1/audio/speech", "openai"), ("/v1/voices", "elevenlabs")):
        head = (f"GET {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {'a' * size}\r\n\r\n").encode()
        status, body = exchange(server, head)
        assert status == 431
        if dialect == "openai":
            assert body["error"]["code"] == "headers_too_large"
        else:
            assert body["detail"]["status"] == "headers_too_large"
    assert requests.get(f"{server.url}/health").status_code == 200


# -- 3. web pages in the user's browser ----------------------------------------------------------
def test_a_cross_site_simple_post_cannot_make_it_speak(server):
    served = len(server.backend.served)
    for headers in ({"Content-Type": "text/plain", "Origin": "http://evil.example"},
                    {"Content-Type": "text/plain"},  # an old browser without Origin: still not JSON
                    {"Content-Type": "application/x-www-form-urlencoded"}):
        response = requests.post(f"{server.url}/v1/audio/speech", data=json.dumps(SPEECH), headers=headers)
        assert response.status_code in (403, 415), response.text
    response = requests.post(f"{server.url}/v1/audio/speech", data=json.dumps(SPEECH),
                             headers={"Content-Type": "text/plain"})
    openai_error(response, 415, "unsupported_media_type")
    assert len(server.backend.served) == served  # nothing was generated


def test_a_cross_site_page_cannot_store_a_voice(server):
    from tests.test_cloning_api import stored, wav

    before = stored(server)
    response = requests.post(f"{server.url}/v1/voices/add", data={"name": "Evil"},
                             files=[("files", ("ref.wav", wav(2.0)))], headers={"Origin": "http://evil.example"})
    assert elevenlabs_detail(response, 403)["status"] == "origin_not_allowed"
    assert stored(server) == before


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_other_origins_are_refused_even_for_reads(server, headers):
    response = requests.get(f"{server.url}/v1/voices", headers=headers)
    assert elevenlabs_detail(response, 403)["status"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers


def test_the_servers_own_pages_and_listed_origins_are_served(server):
    port = server.url.rsplit(":", 1)[1]
    assert requests.post(f"{server.url}/v1/audio/speech", json=SPEECH,
                         headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}).ok
    preflight = requests.options(f"{server.url}/v1/audio/speech", headers={
        "Origin": "http://allowed.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://allowed.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    response = requests.post(f"{server.url}/v1/audio/speech", json=SPEECH, headers={"Origin": "http://allowed.example"})
    assert response.ok and response.headers["access-control-allow-origin"] == "http://allowed.example"
    assert "x-request-id" in response.headers["access-control-expose-headers"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8880", "attacker.localhost.evil.example"])
def test_a_forged_host_is_refused_dns_rebinding(server, host):
    answer = raw(server, f"GET /v1/voices HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403") and b"host_not_allowed" in answer
    body = json.dumps(SPEECH)
    answer = raw(server, (f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
    assert answer.startswith(b"HTTP/1.1 403") and b'"error"' in answer


def test_preview_urls_come_from_the_bound_address_not_the_host_header(server):
    port = server.url.rsplit(":", 1)[1]
    voices = requests.get(f"{server.url}/v1/voices", headers={"Host": f"localhost:{port}"}).json()["voices"]
    assert voices[0]["preview_url"] == f"http://127.0.0.1:{port}/v1/voices/fakevoice0/preview"


# -- 4. the key, on every route but /health -------------------------------------------------------
def test_with_a_key_every_route_but_health_wants_it(tmp_path):
    settings = piper_settings(tmp_path, api_key="s3cret", warmup_on_start=False)
    with live_server(settings, backend=FakeBackend(frames=2)) as locked:
        assert requests.get(f"{locked.url}/health").status_code == 200
        scrape = requests.get(f"{locked.url}/metrics")
        assert scrape.status_code == 401 and scrape.headers["www-authenticate"] == "Bearer"
        assert requests.get(f"{locked.url}/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = requests.get(f"{locked.url}/")
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic ")  # the browser asks
        basic = "Basic " + base64.b64encode(b"anyone:s3cret").decode()
        assert requests.get(f"{locked.url}/", headers={"Authorization": basic}).status_code == 200
        assert requests.get(f"{locked.url}/playground.js", headers={"Authorization": basic}).status_code == 200
        # The page's own requests carry the browser's Basic credentials.
        assert requests.get(f"{locked.url}/v1/audio/voices", headers={"Authorization": basic}).status_code == 200
        assert requests.get(f"{locked.url}/v1/audio/voices", headers={"Authorization": "Basic !!"}).status_code == 401


@pytest.mark.parametrize("head, status, code", [
    (b"GET /v1/voices HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n", 400, "malformed_request"),
    (b"POST /v1/voices/add HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
    (b"POST /v1/text-to-speech/fake_voice HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", 400, "malformed_request")])
def test_a_malformed_request_is_refused_in_the_dialects_shape(server, head, status, code):
    """waitress answered these in plain text."""
    answer_status, body = exchange(server, head)
    assert answer_status == status and body["detail"]["status"] == code


@pytest.mark.parametrize("path, dialect", [("/v1/no-such-route", "openai"), ("/v1/audio/nothing", "openai"),
                                          ("/v1/voices/fake_voice/nothing", "elevenlabs"), ("/v2/nothing", "openai")])
def test_with_a_key_an_unknown_route_asks_for_the_key_before_saying_it_is_unknown(tmp_path, path, dialect):
    """Route discovery without the key: a 404 told a keyless caller which routes exist."""
    settings = piper_settings(tmp_path, api_key="s3cret", warmup_on_start=False)
    with live_server(settings, backend=FakeBackend(frames=2)) as locked:
        for method in (requests.get, requests.post):
            keyless = method(locked.url + path)
            keyed = method(locked.url + path, headers={"Authorization": "Bearer s3cret"})
            if dialect == "openai":
                assert openai_error(keyless, 401)["code"] == "invalid_api_key"
                openai_error(keyed, 404)
            else:
                assert elevenlabs_detail(keyless, 401)["status"] == "invalid_api_key"
                assert elevenlabs_detail(keyed, 404)["status"]
        # A known route with a method it does not take: also the key first.
        assert openai_error(requests.delete(f"{locked.url}/v1/audio/speech"), 401)["code"] == "invalid_api_key"
        assert requests.delete(f"{locked.url}/v1/audio/speech",
                               headers={"Authorization": "Bearer s3cret"}).status_code == 405


def test_serving_beyond_loopback_without_a_key_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CACHE_DIR": str(tmp_path), "WARMUP_ON_START": "false"}
    done = subprocess.run([sys.executable, "-m", "sesame_server", "--env-file", str(tmp_path / "none"), "serve",
                           "--backend", "piper", "--host", "0.0.0.0", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "API_KEY" in done.stderr and "ALLOW_REMOTE_WITHOUT_KEY" in done.stderr


def test_a_page_token_past_the_end_is_an_empty_page_and_garbage_is_422(server):
    everything = requests.get(f"{server.url}/v2/voices", params={"page_size": 100}).json()
    total = everything["total_count"]
    for token in (str(total), str(total + 5), "2000000"):
        page = requests.get(f"{server.url}/v2/voices", params={"next_page_token": token})
        assert page.status_code == 200, page.text
        assert page.json()["voices"] == [] and page.json()["has_more"] is False
        assert page.json()["next_page_token"] is None and page.json()["total_count"] == total
    for garbage in ("abc", "-1", "1.5"):
        [detail] = elevenlabs_detail(requests.get(f"{server.url}/v2/voices", params={"next_page_token": garbage}), 422)
        assert detail["loc"] == ["query", "next_page_token"]


def test_nothing_here_hurt_the_server(server):
    assert requests.post(f"{server.url}/v1/audio/speech", json=SPEECH).status_code == 200
    assert requests.get(f"{server.url}/health").json()["status"] == "ok"
