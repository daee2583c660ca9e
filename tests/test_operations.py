"""What an operator sees of a running server: /metrics and the JSON request log."""

from __future__ import annotations

import json
import os
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import wait_until
from tests.live import cli_server


def scrape(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_metrics_parse_and_ttfa_moves_after_a_request(piper_server):
    before = scrape(piper_server.url)
    response = requests.post(f"{piper_server.url}/v1/audio/speech",
                             json={"model": "tts-1", "voice": "alloy", "input": "Counting.", "response_format": "opus"})
    assert response.status_code == 200
    # Labelled by the node that answered (X-Served-By): one histogram per node, by name.
    key = f"sesame_tts_time_to_first_audio_seconds_count{{dialect=openai,node={response.headers['X-Served-By']}}}"
    # The request line (and its job's metrics) is recorded when waitress closes the response.
    wait_until(lambda: scrape(piper_server.url).get(key) == before.get(key, 0) + 1)
    after = scrape(piper_server.url)
    # One inference thread: its generating seconds fit in the process's lifetime (rate() <= 1).
    busy = after["sesame_tts_busy_seconds_total{}"]
    assert 0 < busy <= time.time() - after["process_start_time_seconds{}"]
    encode = "sesame_tts_encode_seconds_count{format=opus}"
    assert after[encode] == before.get(encode, 0) + 1
    requests_key = next(k for k in after if k.startswith("sesame_tts_requests_total{")
                        and "route=/v1/audio/speech" in k and "status=200" in k and "format=opus" in k)
    assert after[requests_key] >= 1
    assert after["sesame_tts_model_loaded{}"] == 1


def test_served_requests_are_logged_as_json_lines(tmp_path):
    env = {**os.environ, "CACHE_DIR": str(tmp_path), "BACKEND": "piper", "LOG_LEVEL": "INFO"}
    with cli_server(["serve"], env) as url:
        ok = requests.post(f"{url}/v1/text-to-speech/JoeEmbeddedPiper/stream", json={"text": "Log me."})
        bad = requests.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "voice": "nobody", "input": "Hi."})
        assert (ok.status_code, bad.status_code) == (200, 400)
        log_file = tmp_path / "server.log"
        wait_until(lambda: bad.headers["x-request-id"] in log_file.read_text()
                   and ok.headers["request-id"] in log_file.read_text())
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    by_id = {line.get("request_id"): line for line in lines if line.get("request_id")}
    speech = by_id[ok.headers["request-id"]]
    for field in ("request_id", "dialect", "route", "voice", "format", "input_length", "streamed", "queue_wait_ms",
                  "ttfa_ms", "generation_ms", "audio_seconds", "status", "interrupted"):
        assert field in speech, field
    assert speech["dialect"] == "elevenlabs" and speech["status"] == 200 and speech["streamed"] is True
    assert speech["input_length"] == len("Log me.") and speech["audio_seconds"] > 0.3
    error = by_id[bad.headers["x-request-id"]]
    assert error["status"] == 400 and "nobody" in error["error"]


def test_health_and_metrics_scraped_while_generating_never_touch_the_backend(tmp_path):
    """/health and /metrics read what the inference thread published, never the backend:
    scraping them in a loop mid-generation is always clean, and status() runs on one thread."""
    import threading

    from tests.conftest import piper_settings
    from tests.fakes import FakeBackend
    from tests.live import live_server

    backend = FakeBackend(frames=40, gated=True)
    with live_server(piper_settings(tmp_path, warmup_on_start=False), backend=backend) as server:
        body = {"model": "tts-1", "voice": "fake_voice", "input": "A long one.", "response_format": "pcm"}
        speaking = threading.Thread(target=requests.post, args=(f"{server.url}/v1/audio/speech",), kwargs={"json": body})
        speaking.start()
        wait_until(backend.started.is_set)
        for n in range(40):
            backend.gate.release()
            health = requests.get(f"{server.url}/health")
            assert health.status_code == 200 and health.json()["model"]["loaded"] is True
            assert requests.get(f"{server.url}/metrics").status_code == 200
        speaking.join(10)
    assert backend.status_threads == {"inference"}
