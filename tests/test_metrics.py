"""Prometheus metrics: exposition parses, histograms move, names follow the conventions."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from sesame_server.engine.engine import Engine
from sesame_server.engine.request import SpeechRequest
from sesame_server.logs import init_request_log
from sesame_server.metrics import EXTENSION, Metrics, init_metrics
from tests.fakes import FakeBackend, wait_until

SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
UNITLESS_HISTOGRAMS = {"sesame_tts_generation_real_time_factor"}  # seconds per second


@pytest.fixture
def served():
    backend = FakeBackend(frames=3)
    engine = Engine(backend, warmup=False).start()
    assert engine.wait_ready(5)
    app = Flask(__name__)
    metrics = init_metrics(app, engine)
    yield app, engine, metrics
    engine.stop()


def scrape(app) -> dict:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families: dict, name: str, sample: str | None = None, **labels) -> float:
    family = families[name]
    for s in family.samples:
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample or name}{labels} in {family.samples}")


def speech(rid: str) -> SpeechRequest:
    return SpeechRequest(text="Hello there.", sentences=("Hello there.",), voice="fake_voice", request_id=rid)


def test_exposition_parses_and_has_every_family(served):
    app, _, metrics = served
    assert app.extensions[EXTENSION] is metrics
    families = scrape(app)
    for name in ("sesame_tts_requests", "sesame_tts_time_to_first_audio_seconds", "sesame_tts_queue_wait_seconds",
                 "sesame_tts_queue_depth", "sesame_tts_generation_seconds", "sesame_tts_generation_real_time_factor",
                 "sesame_tts_cancellations", "sesame_tts_encode_seconds", "sesame_tts_context_cache_turns",
                 "sesame_tts_context_lookups", "sesame_tts_model_loaded", "sesame_tts_engine_state",
                 "sesame_tts_process_peak_resident_memory_bytes", "process_resident_memory_bytes"):
        assert name in families, name
    assert value(families, "sesame_tts_model_loaded") == 1
    assert value(families, "sesame_tts_engine_state", state="ready") == 1
    assert value(families, "sesame_tts_queue_depth") == 0
    assert value(families, "process_resident_memory_bytes") > 1e6


def test_ttfa_histogram_moves_after_a_job(served):
    app, engine, _ = served
    assert not _has_series(scrape(app), "sesame_tts_time_to_first_audio_seconds")
    job = engine.submit(speech("r1"))
    assert sum(1 for _ in job.blocks()) == 3
    wait_until(lambda: _has_series(scrape(app), "sesame_tts_time_to_first_audio_seconds"))
    after = scrape(app)
    ttfa = "sesame_tts_time_to_first_audio_seconds"
    assert value(after, ttfa, f"{ttfa}_count", dialect="unknown") == 1
    assert value(after, ttfa, f"{ttfa}_sum", dialect="unknown") > 0
    assert value(after, "sesame_tts_generation_seconds", "sesame_tts_generation_seconds_count") == 1
    assert value(after, "sesame_tts_generated_audio_seconds", "sesame_tts_generated_audio_seconds_total") == \
        pytest.approx(0.24)


def _has_series(families: dict, name: str) -> bool:
    return any(s.name == f"{name}_count" for s in families[name].samples)


def fake_job(*, started=0.5, first=0.7, finished=2.5, audio=4.0, interrupted=False, cancelled=False, dialect="x"):
    submitted = 100.0
    return SimpleNamespace(
        request=SimpleNamespace(dialect=dialect), submitted_at=submitted,
        started_at=None if started is None else submitted + started,
        first_audio_at=None if first is None else submitted + first,
        finished_at=None if finished is None else submitted + finished,
        audio_seconds=audio, interrupted=interrupted,
        cancel=SimpleNamespace(is_set=lambda: cancelled or interrupted),
    )


def test_observe_job_records_waits_rtf_and_cancellations():
    metrics = Metrics(process=False)
    metrics.observe_job(fake_job(), "openai")  # 2 s of generation for 4 s of audio: RTF 0.5
    metrics.observe_job(fake_job(interrupted=True, audio=1.0), "elevenlabs")
    metrics.observe_job(fake_job(started=None, first=None, finished=3.0, audio=0.0, cancelled=True), "openai")
    metrics.observe_engine_job(fake_job(dialect="elevenlabs"))
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition()[0].decode())}
    rtf = "sesame_tts_generation_real_time_factor"
    assert value(families, rtf, f"{rtf}_sum", dialect="openai") == pytest.approx(0.5)
    assert value(families, rtf, f"{rtf}_count", dialect="elevenlabs") == 1  # the interrupted one is left out
    wait = "sesame_tts_queue_wait_seconds"
    assert value(families, wait, f"{wait}_sum", dialect="openai") == pytest.approx(0.5)
    cancel = "sesame_tts_cancellations"
    assert value(families, cancel, f"{cancel}_total", dialect="elevenlabs", stage="generating") == 1
    assert value(families, cancel, f"{cancel}_total", dialect="openai", stage="queued") == 1


def test_encode_context_and_request_observations():
    metrics = Metrics(process=False)
    metrics.observe_encode("mp3", 0.004)
    metrics.set_context_cache(3)
    for hit in (True, True, False):
        metrics.observe_context_lookup(hit)
    metrics.observe_request("openai", "/v1/audio/speech", "mp3", 200, True, duration=1.5)
    metrics.observe_record({"dialect": "elevenlabs", "route": "/v1/text-to-speech/<voice_id>", "format": None,
                            "status": 404, "streamed": False})
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition()[0].decode())}
    assert value(families, "sesame_tts_encode_seconds", "sesame_tts_encode_seconds_count", format="mp3") == 1
    assert value(families, "sesame_tts_context_cache_turns") == 3
    assert value(families, "sesame_tts_context_lookups", "sesame_tts_context_lookups_total", result="hit") == 2
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="openai",
                 route="/v1/audio/speech", format="mp3", status="200", streamed="true") == 1
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="elevenlabs",
                 format="none", status="404", streamed="false") == 1


def test_request_hook_counts_scrapes(served):
    app, _, metrics = served
    init_request_log(app, metrics.observe_record)
    client = app.test_client()
    for _ in range(2):
        client.get("/metrics").close()  # closing the response is what runs the hook
    families = scrape(app)
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="metrics",
                 route="/metrics", status="200") == 2


def test_names_and_labels_follow_prometheus_conventions(served):
    app, engine, metrics = served
    job = engine.submit(speech("r2"))
    list(job.blocks())
    metrics.observe_encode("wav", 0.001)
    metrics.observe_request("openai", "/v1/audio/speech", "wav", 200, False, duration=0.2)
    wait_until(lambda: _has_series(scrape(app), "sesame_tts_generation_seconds"))
    for family in scrape(app).values():
        assert SNAKE.match(family.name), family.name
        assert family.documentation, f"{family.name} has no HELP"
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        for sample in samples:
            assert all(SNAKE.match(label) for label in sample.labels), sample
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in samples), family.name
        if family.type == "histogram" and family.name not in UNITLESS_HISTOGRAMS:
            assert family.name.endswith(("_seconds", "_tokens")), family.name  # a base unit, or a count of
        if "memory" in family.name:
            assert family.name.endswith("_bytes"), family.name
        if family.name.startswith("sesame_tts_") and "time" in family.name.replace("real_time", ""):
            assert "_seconds" in family.name, family.name


def test_model_loaded_gauge_follows_the_backend(served):
    app, engine, _ = served
    engine.backend.unload()
    assert value(scrape(app), "sesame_tts_model_loaded") == 0


def test_each_app_has_its_own_registry():
    engines = [Engine(FakeBackend(), warmup=False) for _ in range(2)]
    apps = [Flask(f"app{n}") for n in range(2)]
    first, second = (init_metrics(app, engine) for app, engine in zip(apps, engines))
    first.observe_encode("mp3", 0.01)
    assert first.registry is not second.registry
    body = apps[1].test_client().get("/metrics").get_data(as_text=True)
    assert 'sesame_tts_encode_seconds_count{format="mp3"}' not in body


def test_openmetrics_is_negotiated(served):
    app, _, _ = served
    response = app.test_client().get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_scrape_is_fast_enough_for_a_busy_server(served):
    app, _, _ = served
    client = app.test_client()
    started = time.perf_counter()
    for _ in range(20):
        client.get("/metrics")
    assert (time.perf_counter() - started) / 20 < 0.25  # generous: CI machines are small
