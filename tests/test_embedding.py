"""The speech API mounted on someone else's Flask app adds its routes and touches nothing else."""

from __future__ import annotations

import pytest
from flask import Flask, abort, jsonify

from sesame_server import init_app
from tests.audio_check import decode
from tests.conftest import piper_settings
from tests.fakes import FakeBackend

SPEECH = {"model": "m", "voice": "fake_voice", "input": "Hi.", "response_format": "wav"}


def host_app() -> Flask:
    app = Flask("host_app")

    @app.get("/")
    def home():
        return "host home"

    @app.get("/items/<name>")
    def item(name):
        if name == "missing":
            abort(404, "no such item")
        if name == "broken":
            raise KeyError(name)
        return name

    @app.get("/v1/host-own")
    def host_own():
        return "host v1 route"

    @app.errorhandler(404)
    def host_404(error):
        return f"host 404: {error.description}", 404

    @app.errorhandler(KeyError)
    def host_key_error(error):
        return jsonify(host_error=str(error)), 418

    return app


@pytest.fixture
def mounted(tmp_path):
    app = host_app()
    runtime = init_app(app, piper_settings(tmp_path, warmup_on_start=False, api_key="s3cret"),
                       backend=FakeBackend(frames=4))
    assert runtime.engine.wait_ready(5)
    yield app, app.test_client()
    runtime.close()


def test_the_host_keeps_its_own_404_error_handlers_routes_and_home(mounted):
    app, client = mounted
    assert client.get("/").data == b"host home"
    missing = client.get("/items/missing")
    assert (missing.status_code, missing.data) == (404, b"host 404: no such item")
    broken = client.get("/items/broken")
    assert broken.status_code == 418 and broken.json == {"host_error": "'broken'"}
    own = client.get("/v1/host-own")  # under /v1 but the host's: no speech API key wanted
    assert (own.status_code, own.data) == (200, b"host v1 route")
    unknown = client.get("/v1/nothing-here")
    assert unknown.data.startswith(b"host 404")  # the host answers for routes nobody has
    assert "x-request-id" not in own.headers and "x-request-id" not in unknown.headers


def test_no_operator_routes_are_added_unasked(mounted):
    _, client = mounted
    for path in ("/health", "/metrics"):
        assert client.get(path).data.startswith(b"host 404")


def test_the_speech_api_works_with_its_own_key_and_errors(mounted):
    _, client = mounted
    denied = client.post("/v1/audio/speech", json=SPEECH)
    assert denied.status_code == 401 and denied.json["error"]["code"] == "invalid_api_key"
    response = client.post("/v1/audio/speech", json=SPEECH, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200 and response.headers["x-request-id"]
    assert decode(response.data, "wav").seconds == pytest.approx(0.32, abs=0.01)
    bad = client.post("/v1/text-to-speech/fake_voice", json={"text": 3}, headers={"xi-api-key": "s3cret"})
    assert bad.status_code == 422 and bad.json["detail"][0]["loc"] == ["body", "text"]


def test_operator_routes_on_request(tmp_path):
    app = host_app()
    runtime = init_app(app, piper_settings(tmp_path, warmup_on_start=False), backend=FakeBackend(frames=2), ops=True)
    try:
        assert runtime.engine.wait_ready(5)
        client = app.test_client()
        assert client.get("/health").json["status"] == "ok"
        assert client.get("/metrics").status_code == 200
        assert client.get("/").data == b"host home"  # the host registered / first: its own stays
    finally:
        runtime.close()
