"""Prometheus metrics: one registry per app, kept in app.extensions.

Counters and histograms are fed by the request log (observe_record: the request's line
and its job, so every job observation has the request's dialect), the audio pipeline
(observe_encode) and the context cache; gauges about the engine and the process are
computed at scrape time (ops.collectors). The HTTP route lives in the API layer, which
serves `metrics(app).exposition(accept)`.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from sesame_server.ops.collectors import (
    NAMESPACE, CountCollector, EngineCollector, PeakMemoryCollector, ProcessMemoryCollector,
)

if TYPE_CHECKING:
    from sesame_server.engine.engine import Engine
    from sesame_server.engine.job import Job

EXTENSION = "sesame_tts_metrics"

# Buckets sized for speech: first audio is expected in 0.1-0.5 s on Apple Silicon, a
# sentence takes seconds to generate, and encoding one response takes milliseconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RTF_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
ENCODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREFILL_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every metric the server exports, registered on its own CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True, node: str | None = None):
        self.registry = registry or CollectorRegistry()
        self.node = node or socket.gethostname()  # Runtime.node (X-Served-By): the TTFA histogram's label
        r = self.registry
        ns = NAMESPACE
        self.requests = Counter(
            "requests", "HTTP requests by dialect, route template, audio format, status and streaming.",
            ["dialect", "route", "format", "status", "streamed"], namespace=ns, registry=r)
        self.request_duration = Histogram(
            "request_duration_seconds", "Time from request start until the response was closed.",
            ["dialect", "route"], namespace=ns, buckets=REQUEST_BUCKETS, registry=r)
        # `node` is constant per process; the scrape target adds pod/instance too, but those
        # change on every restart and are lost in federation: this is the name in X-Served-By.
        self.time_to_first_audio = Histogram(
            "time_to_first_audio_seconds", "From submit to the first PCM block (queue wait included), by node.",
            ["dialect", "node"], namespace=ns, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Time a job waited in the queue before generation started.",
            ["dialect"], namespace=ns, buckets=QUEUE_BUCKETS, registry=r)
        self.generation = Histogram(
            "generation_seconds", "Time the inference thread spent generating one job.",
            ["dialect"], namespace=ns, buckets=GENERATION_BUCKETS, registry=r)
        self.real_time_factor = Histogram(
            "generation_real_time_factor",
            "Generation seconds per second of audio for completed jobs (below 1 is faster than real time).",
            ["dialect"], namespace=ns, buckets=RTF_BUCKETS, registry=r)
        self.audio = Counter(
            "generated_audio_seconds", "Seconds of audio generated.", ["dialect"], namespace=ns, registry=r)
        self.cancellations = Counter(
            "cancellations", "Jobs cancelled by the client: while queued or mid-generation (interrupted).",
            ["dialect", "stage"], namespace=ns, registry=r)
        self.encode = Histogram(
            "encode_seconds", "Encoder time spent on one response, by output format.",
            ["format"], namespace=ns, buckets=ENCODE_BUCKETS, registry=r)
        self.prefill_tokens = Histogram(
            "prefill_tokens", "Backbone tokens prefilled before a job's first audio (CSM): its own text when "
            "the voice prompt and conversation were already in the KV cache.",
            ["dialect"], namespace=ns, buckets=PREFILL_BUCKETS, registry=r)
        self.context_cache = Gauge(
            "context_cache_turns", "Conversation turns held in the context cache.", namespace=ns, registry=r)
        self.context_lookups = Counter(
            "context_lookups", "Context cache lookups; hit rate = hit / (hit + miss).",
            ["result"], namespace=ns, registry=r)
        for result in ("hit", "miss"):  # export zeros so the hit-rate query works from the start
            self.context_lookups.labels(result=result)
        # A session's first turn counts too: against the request rate, a rise means sessions lose their node.
        self.context_cold_starts = Counter(
            "context_cold_starts", "Requests that named earlier turns (reason=session: X-Session-Id; reference: "
            "previous_request_ids or a context audio_ref) and found none of them on this node: they start cold.",
            ["reason"], namespace=ns, registry=r)
        for reason in ("session", "reference"):
            self.context_cold_starts.labels(reason=reason)
        self.turn_store_errors = Counter(
            "turn_store_errors", "Reads and writes of the shared turn store (TURN_STORE) that did not reach it: "
            "failed, timed out, or skipped while it is unreachable.", ["operation"], namespace=ns, registry=r)
        for operation in ("read", "write"):
            self.turn_store_errors.labels(operation=operation)
        self.turn_store_restored = Counter(
            "turn_store_restored_turns", "Turns this node read back from the shared turn store (TURN_STORE): "
            "another node spoke them.", namespace=ns, registry=r)
        r.register(PeakMemoryCollector())
        if process:
            PlatformCollector(registry=r)  # python_info
            if os.path.isdir("/proc/self"):
                ProcessCollector(registry=r)  # process_* (RSS, CPU, fds, start time) from /proc
            else:
                r.register(ProcessMemoryCollector())  # macOS: the same RSS/virtual names, via psutil

    # -- requests ------------------------------------------------------------------------
    def observe_request(self, dialect: str, route: str, response_format: str | None, status: int | str,
                        streamed: bool, duration: float | None = None) -> None:
        """One finished HTTP request. `route` must be the route template (request.url_rule.rule),
        never the raw path: voice ids in paths would make unbounded label values."""
        self.requests.labels(dialect=dialect or "none", route=route or "unmatched",
                             format=response_format or "none", status=str(status),
                             streamed=_bool(streamed)).inc()
        if duration is not None:
            self.request_duration.labels(dialect=dialect or "none", route=route or "unmatched").observe(duration)

    def observe_record(self, fields: Mapping[str, Any], job: Job | None = None) -> None:
        """A request_log observer: the request line's fields, and its job if it had one."""
        dialect = str(fields.get("dialect") or "none")
        duration_ms = fields.get("duration_ms")
        self.observe_request(
            dialect, str(fields.get("route") or "unmatched"), fields.get("format"), fields.get("status") or 0,
            bool(fields.get("streamed")), None if duration_ms is None else duration_ms / 1000.0,
        )
        if job is not None:
            self.observe_job(job, dialect)

    # -- jobs ----------------------------------------------------------------------------
    def observe_job(self, job: Job, dialect: str) -> None:
        """A job of a finished request (or one the client left while it was queued)."""
        dialect = dialect or "none"
        if job.started_at is None:
            if job.cancel.is_set():
                self.cancellations.labels(dialect=dialect, stage="queued").inc()
            return
        interrupted = job.interrupted or (not job.done.is_set() and job.cancel.is_set())
        self.queue_wait.labels(dialect=dialect).observe(max(0.0, job.started_at - job.submitted_at))
        if job.first_audio_at is not None:
            ttfa = max(0.0, job.first_audio_at - job.submitted_at)
            self.time_to_first_audio.labels(dialect=dialect, node=self.node).observe(ttfa)
            if job.prefill_tokens is not None:
                self.prefill_tokens.labels(dialect=dialect).observe(job.prefill_tokens)
        audio_seconds = job.audio_seconds
        if audio_seconds > 0:
            self.audio.labels(dialect=dialect).inc(audio_seconds)
        if job.finished_at is not None:
            generation = max(0.0, job.finished_at - job.started_at)
            self.generation.labels(dialect=dialect).observe(generation)
            # An interrupted job's ratio includes the frame in flight at cancel time: skip it.
            if audio_seconds > 0 and not interrupted and job.error is None:
                self.real_time_factor.labels(dialect=dialect).observe(generation / audio_seconds)
        if interrupted:
            self.cancellations.labels(dialect=dialect, stage="generating").inc()

    # -- audio and context -----------------------------------------------------------------
    def observe_encode(self, response_format: str, seconds: float) -> None:
        self.encode.labels(format=response_format).observe(seconds)

    def set_context_cache(self, size: int) -> None:
        self.context_cache.set(size)

    def observe_context_lookup(self, hit: bool) -> None:
        self.context_lookups.labels(result="hit" if hit else "miss").inc()

    def observe_context_cold_start(self, reason: str) -> None:
        self.context_cold_starts.labels(reason=reason).inc()

    def observe_turn_store_error(self, operation: str) -> None:
        self.turn_store_errors.labels(operation=operation).inc()

    def observe_restored_turns(self, count: int) -> None:
        self.turn_store_restored.inc(count)

    # -- scraping ----------------------------------------------------------------------------
    def watch_engine(self, engine: Engine) -> None:
        """Queue depth, engine state and model figures, read from `engine` at each scrape."""
        self.registry.register(EngineCollector(engine))

    def watch_count(self, name: str, documentation: str, count: Callable[[], int]) -> None:
        """A gauge read from `count()` at each scrape (it must be safe from any thread)."""
        self.registry.register(CountCollector(name, documentation, count))

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type, negotiated like prometheus_client's own app."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def init_metrics(app: Flask, engine: Engine | None = None, node: str | None = None) -> Metrics:
    """Create the app's Metrics and keep it in app.extensions; given an engine, add its
    scrape-time gauges. Registers no route and no engine observer: the API layer serves
    the exposition and feeds observe_record from the request log."""
    registry = Metrics(node=node)
    app.extensions[EXTENSION] = registry
    if engine is not None:
        registry.watch_engine(engine)
    return registry


def metrics(app: Flask | None = None) -> Metrics:
    """The Metrics of `app` (default: the current app, inside a request or app context)."""
    return (app or current_app).extensions[EXTENSION]


def _bool(value: bool) -> str:
    return "true" if value else "false"
