"""Prometheus metrics: exposition parses, histograms move, names follow the conventions, and a
scrape reads only what the inference thread published."""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace

import pytest
from flask import Flask, Response, request
from prometheus_client.parser import text_string_to_metric_families

from sesame_server.engine.engine import Engine
from sesame_server.engine.request import SpeechRequest
from sesame_server.engine.status import BusyTime
from sesame_server.ops.collectors import ProcessMemoryCollector
from sesame_server.ops.metrics import EXTENSION, Metrics, init_metrics, metrics
from sesame_server.ops.request_log import init_request_log, note_request
from tests.fakes import FakeBackend, FakeClock, wait_until

SNAKE = re.compile(r"^[a-z_][a-z0-9_]*$")
UNITLESS_HISTOGRAMS = {"sesame_tts_generation_real_time_factor"}  # seconds per second


def metrics_app(engine: Engine, name: str = __name__, node: str = "node-under-test") -> Flask:
    """An app with the metrics and a /metrics route standing in for the API layer's."""
    app = Flask(name)
    init_metrics(app, engine, node=node)

    @app.get("/metrics")
    def scrape_route():
        body, content_type = metrics().exposition(request.headers.get("Accept"))
        return Response(body, content_type=content_type)

    return app


def speech(rid: str) -> SpeechRequest:
    return SpeechRequest(text="Hello there.", voice="fake_voice", request_id=rid)


@pytest.fixture
def served():
    """A real engine, and an app whose request log feeds the metrics, like the server's."""
    backend = FakeBackend(frames=3)
    engine = Engine(backend, warmup=False).start()
    assert engine.wait_ready(5)
    app = metrics_app(engine)
    init_request_log(app, metrics(app).observe_record)

    @app.post("/v1/audio/speech")
    def speak():
        job = engine.submit(speech(request.args.get("rid", "r")))
        note_request(dialect=request.args.get("dialect", "openai"), format="pcm", job=job)
        return Response((block.tobytes() for block in job.blocks()), content_type="audio/pcm")

    yield app, engine, metrics(app)
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


def _has_series(families: dict, name: str) -> bool:
    return any(s.name == f"{name}_count" for s in families[name].samples)


def test_exposition_parses_and_has_every_family(served):
    app, _, registry = served
    assert app.extensions[EXTENSION] is registry
    families = scrape(app)
    for name in ("sesame_tts_requests", "sesame_tts_time_to_first_audio_seconds", "sesame_tts_queue_wait_seconds",
                 "sesame_tts_queue_depth", "sesame_tts_generation_seconds", "sesame_tts_generation_real_time_factor",
                 "sesame_tts_cancellations", "sesame_tts_encode_seconds", "sesame_tts_context_cache_turns",
                 "sesame_tts_context_lookups", "sesame_tts_model_loaded", "sesame_tts_engine_state",
                 "sesame_tts_process_peak_resident_memory_bytes", "process_resident_memory_bytes",
                 "sesame_tts_build_info", "sesame_tts_busy_seconds"):
        assert name in families, name
    assert value(families, "sesame_tts_model_loaded") == 1
    assert value(families, "sesame_tts_engine_state", state="ready") == 1
    assert value(families, "sesame_tts_queue_depth") == 0
    assert value(families, "sesame_tts_busy_seconds", "sesame_tts_busy_seconds_total") == 0
    assert value(families, "process_resident_memory_bytes") > 1e6
    assert value(families, "sesame_tts_build_info", backend="fake", model="fake") == 1
    assert "sesame_tts_model_memory_bytes" not in families  # the fake reports none


def test_init_metrics_registers_no_route_and_no_engine_observer():
    engine = Engine(FakeBackend(), warmup=False)
    app = Flask(__name__)
    registry = init_metrics(app, engine)
    assert metrics(app) is registry
    assert [rule.rule for rule in app.url_map.iter_rules()] == ["/static/<path:filename>"]
    assert engine.on_job_done == []
    with app.app_context():
        assert metrics() is registry


def test_job_histograms_move_from_the_request_log_with_its_dialect(served):
    app, _, _ = served
    assert not _has_series(scrape(app), "sesame_tts_time_to_first_audio_seconds")
    response = app.test_client().post("/v1/audio/speech?dialect=elevenlabs")
    assert len(response.get_data()) == 3 * 1920 * 4
    response.close()  # the request log observes the job when the response is closed
    after = scrape(app)
    ttfa = "sesame_tts_time_to_first_audio_seconds"
    assert value(after, ttfa, f"{ttfa}_count", dialect="elevenlabs", node="node-under-test") == 1
    assert value(after, ttfa, f"{ttfa}_sum", dialect="elevenlabs") > 0
    assert value(after, "sesame_tts_generation_seconds", "sesame_tts_generation_seconds_count",
                 dialect="elevenlabs") == 1
    assert value(after, "sesame_tts_generated_audio_seconds", "sesame_tts_generated_audio_seconds_total",
                 dialect="elevenlabs") == pytest.approx(0.24)
    assert value(after, "sesame_tts_prefill_tokens", "sesame_tts_prefill_tokens_sum", dialect="elevenlabs") == 7
    assert value(after, "sesame_tts_requests", "sesame_tts_requests_total", dialect="elevenlabs",
                 route="/v1/audio/speech", format="pcm", status="200", streamed="true") == 1


def busy_seconds(app) -> float:
    return value(scrape(app), "sesame_tts_busy_seconds", "sesame_tts_busy_seconds_total")


def test_busy_seconds_count_generation_time_within_the_wall_time(served):
    # What an autoscaler reads: rate(sesame_tts_busy_seconds_total) is the utilisation, 0..1.
    app, engine, _ = served
    client = app.test_client()
    started = time.monotonic()
    for n in range(3):
        client.post(f"/v1/audio/speech?rid=r{n}").close()
    wall = time.monotonic() - started
    busy = busy_seconds(app)
    assert 0 < busy <= wall
    generation = value(scrape(app), "sesame_tts_generation_seconds", "sesame_tts_generation_seconds_sum",
                       dialect="openai")
    assert busy == pytest.approx(generation, abs=0.05)  # the same jobs, timed on the same thread
    time.sleep(0.05)
    assert busy_seconds(app) == busy  # idle: the counter stands still


def test_busy_seconds_grow_while_a_job_runs_and_never_go_back():
    backend = FakeBackend(frames=3, gated=True)
    engine = Engine(backend, warmup=False).start()
    try:
        assert engine.wait_ready(5)
        app = metrics_app(engine)
        job = engine.submit(speech("long"))
        wait_until(backend.started.is_set)
        readings = [busy_seconds(app)]
        time.sleep(0.05)
        readings.append(busy_seconds(app))  # a long sentence counts while it is generated
        assert readings[1] >= readings[0] + 0.04
        for _ in range(3):
            backend.gate.release()
        assert job.done.wait(5)
        readings += [busy_seconds(app) for _ in range(3)]
        assert readings == sorted(readings)
    finally:
        engine.stop()


def test_busy_time_is_monotonic_across_a_jobs_end():
    busy = BusyTime()
    busy.start(time.monotonic() - 1.0)
    running = busy.seconds()
    assert running >= 1.0
    busy.stop(time.monotonic() - 0.5)  # ended before the last read: the reading stands
    assert busy.seconds() == running
    busy.start(time.monotonic() - 2.0)
    assert busy.seconds() >= 2.5


def fake_job(*, started=0.5, first=0.7, finished=2.5, audio=4.0, interrupted=False, cancelled=False):
    submitted = 100.0
    done = threading.Event()
    if finished is not None:
        done.set()
    return SimpleNamespace(
        submitted_at=submitted,
        started_at=None if started is None else submitted + started,
        first_audio_at=None if first is None else submitted + first,
        finished_at=None if finished is None else submitted + finished,
        audio_seconds=audio, interrupted=interrupted, prefill_tokens=None, error=None, done=done,
        cancel=SimpleNamespace(is_set=lambda: cancelled or interrupted),
    )


def test_observe_job_records_waits_rtf_and_cancellations():
    registry = Metrics(process=False)
    registry.observe_job(fake_job(), "openai")  # 2 s of generation for 4 s of audio: RTF 0.5
    registry.observe_job(fake_job(interrupted=True, audio=1.0), "elevenlabs")
    registry.observe_job(fake_job(started=None, first=None, finished=None, audio=0.0, cancelled=True), "openai")
    registry.observe_record({"dialect": "elevenlabs", "route": "/v1/text-to-speech/<voice_id>", "status": 200},
                            fake_job())
    families = {f.name: f for f in text_string_to_metric_families(registry.exposition()[0].decode())}
    rtf = "sesame_tts_generation_real_time_factor"
    assert value(families, rtf, f"{rtf}_sum", dialect="openai") == pytest.approx(0.5)
    assert value(families, rtf, f"{rtf}_count", dialect="elevenlabs") == 1  # the interrupted one is left out
    wait = "sesame_tts_queue_wait_seconds"
    assert value(families, wait, f"{wait}_sum", dialect="openai") == pytest.approx(0.5)
    cancel = "sesame_tts_cancellations"
    assert value(families, cancel, f"{cancel}_total", dialect="elevenlabs", stage="generating") == 1
    assert value(families, cancel, f"{cancel}_total", dialect="openai", stage="queued") == 1


def test_encode_context_and_request_observations():
    registry = Metrics(process=False)
    registry.observe_encode("mp3", 0.004)
    registry.set_context_cache(3)
    for hit in (True, True, False):
        registry.observe_context_lookup(hit)
    registry.observe_request("openai", "/v1/audio/speech", "mp3", 200, True, duration=1.5)
    registry.observe_record({"dialect": "elevenlabs", "route": "/v1/text-to-speech/<voice_id>", "format": None,
                             "status": 404, "streamed": False})
    families = {f.name: f for f in text_string_to_metric_families(registry.exposition()[0].decode())}
    assert value(families, "sesame_tts_encode_seconds", "sesame_tts_encode_seconds_count", format="mp3") == 1
    assert value(families, "sesame_tts_context_cache_turns") == 3
    assert value(families, "sesame_tts_context_lookups", "sesame_tts_context_lookups_total", result="hit") == 2
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="openai",
                 route="/v1/audio/speech", format="mp3", status="200", streamed="true") == 1
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="elevenlabs",
                 format="none", status="404", streamed="false") == 1


def test_request_log_counts_scrapes(served):
    app, _, _ = served
    client = app.test_client()
    for _ in range(2):
        client.get("/metrics").close()  # closing the response is what runs the hook
    families = scrape(app)
    assert value(families, "sesame_tts_requests", "sesame_tts_requests_total", dialect="none",
                 route="/metrics", status="200") == 2


def test_names_and_labels_follow_prometheus_conventions(served):
    app, _, registry = served
    app.test_client().post("/v1/audio/speech").close()
    registry.observe_encode("wav", 0.001)
    registry.observe_request("openai", "/v1/audio/speech", "wav", 200, False, duration=0.2)
    assert _has_series(scrape(app), "sesame_tts_generation_seconds")
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


class MemoryReportingBackend(FakeBackend):
    def status(self) -> dict:
        return {**super().status(), "memory_bytes": 1_234_567_891}


def test_model_memory_gauge_is_the_backends_bytes_exactly():
    engine = Engine(MemoryReportingBackend(), warmup=False).start()
    try:
        assert engine.wait_ready(5)
        families = scrape(metrics_app(engine))
        assert value(families, "sesame_tts_model_memory_bytes") == 1_234_567_891
    finally:
        engine.stop()


def test_model_loaded_gauge_follows_the_published_status():
    clock = FakeClock()
    engine = Engine(FakeBackend(), warmup=False, idle_unload_minutes=1, clock=clock).start()
    try:
        assert engine.wait_ready(5)
        app = metrics_app(engine)
        assert value(scrape(app), "sesame_tts_model_loaded") == 1
        clock.advance(61)
        engine.poke()
        wait_until(lambda: engine.status.state == "unloaded")
        families = scrape(app)
        assert value(families, "sesame_tts_model_loaded") == 0
        assert value(families, "sesame_tts_engine_state", state="unloaded") == 1
    finally:
        engine.stop()


def test_scrapes_during_generation_never_touch_the_backend():
    backend = FakeBackend(frames=6, gated=True)
    engine = Engine(backend, warmup=False).start()
    try:
        assert engine.wait_ready(5)
        app = metrics_app(engine)
        job = engine.submit(speech("busy"))
        wait_until(backend.started.is_set)
        blocks = job.blocks()
        for _ in range(6):  # scrape between frames, while the inference thread generates
            assert value(scrape(app), "sesame_tts_generating") == 1
            backend.gate.release()
            next(blocks)
        assert job.done.wait(5)
        scrape(app)
        assert backend.status_threads == {"inference"}
    finally:
        engine.stop()


def test_each_app_has_its_own_registry():
    engines = [Engine(FakeBackend(), warmup=False) for _ in range(2)]
    apps = [metrics_app(engine, f"app{n}") for n, engine in enumerate(engines)]
    first, second = (metrics(app) for app in apps)
    first.observe_encode("mp3", 0.01)
    assert first.registry is not second.registry
    body = apps[1].test_client().get("/metrics").get_data(as_text=True)
    assert 'sesame_tts_encode_seconds_count{format="mp3"}' not in body


def test_openmetrics_is_negotiated(served):
    app, _, _ = served
    response = app.test_client().get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).rstrip().endswith("# EOF")


def test_process_memory_collector_reports_plausible_bytes():
    # What macOS scrapes (no /proc there); psutil gives the same names on every platform.
    samples = {family.name: family.samples[0].value for family in ProcessMemoryCollector().collect()}
    assert 1e6 < samples["process_resident_memory_bytes"] <= samples["process_virtual_memory_bytes"]


def test_scrape_is_fast_enough_for_a_busy_server(served):
    app, _, _ = served
    client = app.test_client()
    started = time.perf_counter()
    for _ in range(20):
        client.get("/metrics")
    assert (time.perf_counter() - started) / 20 < 0.25  # generous: CI machines are small
